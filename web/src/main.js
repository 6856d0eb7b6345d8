// The cowrite demo page: several people edit one plain-text document.
//
//   /?doc=demo&name=Ada     document id (default "demo"), display name
//   /#token=<JWT>           use this token instead of /dev/token (production)

import * as Y from "yjs";
import { CursorOverlay } from "./cursors.js";
import { colorFor, identityFromUrl } from "./identity.js";
import { DocumentSync } from "./sync.js";
import { bindTextarea, resolvePosition } from "./textarea.js";
import { NoTokenError, TokenSource } from "./tokens.js";

const DOC_ID = /^[\x20-\x7e]{1,256}$/;

const params = new URLSearchParams(location.search);
const rawDoc = params.get("doc") || "demo";
const documentId = DOC_ID.test(rawDoc) ? rawDoc : "demo";
const me = identityFromUrl(params);

const $ = (id) => document.getElementById(id);
const textarea = $("editor");
const statusEl = $("status");
const rosterEl = $("roster");
const messageEl = $("message");

$("doc-id").textContent = documentId;
document.title = `${documentId} · cowrite`;
const invite = new URL(location.href);
invite.searchParams.delete("name");
invite.searchParams.delete("user");
invite.searchParams.set("doc", documentId);
$("share-link").href = invite.pathname + invite.search + invite.hash;
$("share-link").textContent = invite.pathname + invite.search;

const doc = new Y.Doc();
const ytext = doc.getText("text");
const tokens = new TokenSource({ userId: me.userId, name: me.name, documentId });
const sync = new DocumentSync({ doc, documentId, userId: me.userId, tokens });
const overlay = new CursorOverlay(textarea);

const binding = bindTextarea(ytext, textarea, {
  onChange: () => {
    renderCursors();
    publishCursor();
  },
});

// -- presence ----------------------------------------------------------------

function publishCursor() {
  sync.setPresence({ cursor: binding.selection(), name: me.name, color: me.color });
}

for (const type of ["select", "keyup", "mouseup", "focus"]) {
  textarea.addEventListener(type, publishCursor);
}
document.addEventListener("selectionchange", () => {
  if (document.activeElement === textarea) publishCursor();
});

const live = () => sync.state === "connected" || sync.state === "syncing";

function renderCursors() {
  const cursors = [];
  // Disconnected, we do not know where the others are: no stale carets.
  for (const entry of live() ? sync.roster.values() : []) {
    if (entry.userId === me.userId) continue;
    const cursor = entry.state?.cursor;
    const head = resolvePosition(ytext, cursor?.head);
    if (head === null) continue;
    cursors.push({
      userId: entry.userId,
      name: entry.name,
      color: colorFor(entry.userId),
      head,
      anchor: resolvePosition(ytext, cursor.anchor) ?? head,
    });
  }
  overlay.render(ytext.toString(), cursors);
}

function renderRoster() {
  const items = [...sync.roster.values()];
  if (!sync.roster.has(me.userId)) items.push({ userId: me.userId, name: me.name });
  items.sort((a, b) => (a.userId === me.userId ? -1 : b.userId === me.userId ? 1 : a.name.localeCompare(b.name)));
  rosterEl.replaceChildren(
    ...items.map((entry) => {
      const li = document.createElement("li");
      li.dataset.userId = entry.userId;
      if (entry.userId !== me.userId && !live()) {
        li.classList.add("stale");
        li.title = "Last seen before the connection dropped";
      }
      const dot = document.createElement("span");
      dot.className = "dot";
      dot.style.backgroundColor = colorFor(entry.userId);
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = entry.name;
      li.append(dot, name);
      if (entry.userId === me.userId) {
        const you = document.createElement("span");
        you.className = "you";
        you.textContent = "you";
        li.append(you);
      }
      return li;
    }),
  );
  $("roster-count").textContent = String(items.length);
}

sync.addEventListener("roster", () => {
  renderRoster();
  renderCursors();
});
sync.addEventListener("presence", renderCursors);

// -- connection indicator ----------------------------------------------------

const LABELS = {
  connecting: "Connecting…",
  syncing: "Syncing…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  offline: "Offline",
  denied: "No access",
};

function renderStatus({ state, pending }) {
  statusEl.dataset.state = state;
  statusEl.dataset.pending = String(pending);
  let text = LABELS[state] || state;
  if (pending > 0) {
    const edits = `${pending} pending edit${pending === 1 ? "" : "s"}`;
    text = state === "connected" ? `Saving ${edits}…` : `${text} · ${edits}`;
  }
  $("status-text").textContent = text;
}

let shownState = null;
sync.addEventListener("status", (event) => {
  renderStatus(event.detail);
  if (event.detail.state !== shownState) {
    shownState = event.detail.state;
    renderRoster();
    renderCursors();
  }
  if (event.detail.state === "connected" && sync.role === "viewer") {
    showMessage("You can read this document but not edit it.");
  } else if (event.detail.state === "connected" && textarea.readOnly) {
    // Editable once the document's content is here (typing into an empty
    // document that then fills up would be confusing, though it would merge).
    textarea.readOnly = false;
    textarea.placeholder = "Start typing…";
    textarea.focus();
  }
});
sync.addEventListener("error", (event) => showMessage(event.detail.message));

function showMessage(text) {
  messageEl.textContent = text;
  messageEl.hidden = !text;
}

window.addEventListener("beforeunload", (event) => {
  if (sync.pending > 0) event.preventDefault(); // unsaved edits: ask first
});

// -- start -------------------------------------------------------------------

renderRoster();
renderCursors();
renderStatus({ state: "connecting", pending: 0 });

tokens
  .get()
  .then(() => sync.start())
  .catch((err) => {
    if (err instanceof NoTokenError) {
      renderStatus({ state: "denied", pending: 0 });
      showMessage(err.message);
    } else {
      // Offline or the server is down: keep trying through the socket.
      sync.start();
    }
  });
