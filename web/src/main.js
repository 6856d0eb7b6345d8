// The cowrite demo page: several people edit one plain-text document.
//
//   /?doc=demo&name=Ada     document id (default "demo"), display name
//   /#token=<JWT>           use this token instead of /dev/token (production)
//   &snapshotEvery=N        store a snapshot every N operations (default 300; 0: never)

import * as Y from "yjs";
import { CursorOverlay } from "./cursors.js";
import { assignColors, identityFromUrl } from "./identity.js";
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
// The link names the document and nothing else: no token (#token=...), no
// user.  Whoever opens it is someone else, with a token minted for their window.
const invite = new URL("/", location.origin);
invite.searchParams.set("doc", documentId);
$("share-link").href = invite.href;
$("share-link").textContent = invite.href;

const doc = new Y.Doc();
const ytext = doc.getText("text");
const tokens = new TokenSource({ userId: me.userId, name: me.name, documentId });
const snapshotEvery = Number.parseInt(params.get("snapshotEvery") ?? "", 10);
const sync = new DocumentSync({
  doc,
  documentId,
  userId: me.userId,
  tokens,
  ...(Number.isInteger(snapshotEvery) && snapshotEvery >= 0 ? { snapshotEvery } : {}),
});
// The newest snapshot this page received or stored, for whoever inspects the
// page (the browser tests): data-snapshot-seq and data-snapshot-source.
sync.addEventListener("snapshot", (event) => {
  statusEl.dataset.snapshotSeq = String(event.detail.seq);
  statusEl.dataset.snapshotSource = event.detail.received ? "received" : "stored";
});
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
const denied = () => sync.state === "denied";

// Colours of the people present (the same on every page that sees them).
let colors = new Map();
function colorOf(userId) {
  return colors.get(userId) ?? me.color;
}
function updateColors() {
  colors = assignColors([me.userId, ...sync.roster.keys()]);
}

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
      color: colorOf(entry.userId),
      head,
      anchor: resolvePosition(ytext, cursor.anchor) ?? head,
    });
  }
  overlay.render(ytext.toString(), cursors);
}

function renderRoster() {
  updateColors();
  // Refused: nobody is shown as here, us included.
  const items = denied() ? [] : [...sync.roster.values()];
  if (!denied() && !sync.roster.has(me.userId)) items.push({ userId: me.userId, name: me.name });
  $("roster-empty").hidden = items.length > 0;
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
      dot.style.backgroundColor = colorOf(entry.userId);
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
  denied: "Disconnected",
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
    textarea.readOnly = true;
    textarea.placeholder = "The document is empty (you can read it, not edit it).";
    showMessage("You can read this document but not edit it: you are a viewer.");
    messageEl.dataset.kind = "info";
  } else if (event.detail.state === "connected" && textarea.readOnly) {
    // Editable once the document's content is here (typing into an empty
    // document that then fills up would be confusing, though it would merge).
    textarea.readOnly = false;
    textarea.placeholder = "Start typing…";
    textarea.focus();
  } else if (event.detail.state === "denied") {
    renderDenied();
  }
});
sync.addEventListener("error", (event) => {
  if (event.detail.code === "access_denied") return; // renderDenied says it
  showMessage(event.detail.message);
});
sync.addEventListener("role", renderRole);

// -- role --------------------------------------------------------------------

const ROLE_LABELS = { owner: "owner", editor: "editor", viewer: "viewer" };

function renderRole() {
  const role = sync.role;
  const el = $("role");
  el.hidden = role === undefined;
  el.dataset.role = role ?? "none";
  el.textContent = role ? `You: ${ROLE_LABELS[role] ?? role}` : "No access";
  if (role === "viewer") textarea.readOnly = true;
  // The owner decides what anyone with the link gets (development server).
  const linkRole = tokens.info?.linkRole;
  $("link-access").hidden = !(role === "owner" && tokens.info);
  if (role === "owner" && linkRole !== undefined) $("link-role").value = linkRole ?? "";
}

$("link-role").addEventListener("change", async (event) => {
  const select = event.target;
  select.disabled = true;
  try {
    await sync.share("*", select.value || null);
    if (tokens.info) tokens.info.linkRole = select.value || null;
    showMessage("");
  } catch (err) {
    showMessage(`Could not change the link's access: ${err.message}`);
    select.value = tokens.info?.linkRole ?? "";
  } finally {
    select.disabled = false;
  }
});

function renderDenied() {
  renderRole();
  textarea.readOnly = true;
  textarea.value = "";
  textarea.placeholder = "You have no access to this document.";
  const reason = sync.stopReason || "You have no access to this document";
  if (sync.stopCode !== "access_denied") {
    showMessage(`${reason}.`); // a refused token: no role would help
    renderRoster();
    renderCursors();
    return;
  }
  const command = document.createElement("code");
  command.textContent = `cowrite grant ${documentId} ${me.userId} editor`;
  showMessage(
    `${reason}. Its owner can give you a role (your user id is ${me.userId}): `,
    command,
    ", then reload this page.",
  );
  $("share-hint").hidden = true;
  $("link-access").hidden = true;
  renderRoster();
  renderCursors();
}

/** A banner of text and elements (none: hidden). */
function showMessage(...parts) {
  delete messageEl.dataset.kind; // an error unless the caller says otherwise
  messageEl.replaceChildren(...parts.filter(Boolean));
  messageEl.hidden = !messageEl.textContent;
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
      textarea.placeholder = "No token: this page cannot open the document.";
      showMessage(err.message);
    } else {
      // Offline or the server is down: keep trying through the socket.
      sync.start();
    }
  });
