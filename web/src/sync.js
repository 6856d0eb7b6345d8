// One shared document over cowrite's Socket.IO events.
//
// Every local Yjs update is an opaque operation in cowrite's log:
//   edit-operation {documentId, operation: <Uint8Array update>, clientOpId}
// travels as a Socket.IO binary attachment, byte for byte; the ack carries its
// seq.  Remote updates arrive as remote-edit {operation, seq} and are applied
// with Y.applyUpdate.  Yjs updates commute and are idempotent, so the order in
// which they are applied does not matter for the text; the log's seq only
// tells us where to resume after a reconnection.
//
// Delivery rules kept here:
// - `lastSeq` is contiguous: every operation up to it has been applied (or is
//   our own, acknowledged).  Reconnection joins with since = lastSeq, so the
//   catch-up has no gaps even when our ack of seq 8 overtook seq 7 from
//   another instance.
// - The outbox keeps every local update until the server acknowledges it.
//   One operation is in flight at a time; updates queued behind it are merged
//   (Y.mergeUpdates) into the next one.  An operation that was sent keeps its
//   clientOpId for good, so resending it after a reconnection is recognised by
//   the server (duplicate: true) and never lands in the log twice.
// - Nothing is emitted while disconnected: socket.io-client would buffer it
//   and send it before join-document, where the server answers not_joined.
// - Snapshots: we join with snapshot: true, so a new page starts from the
//   newest snapshot (a Yjs state update, Y.encodeStateAsUpdate) plus the
//   operations after it instead of the whole log; an ack with resync: true
//   (our lastSeq is older than the kept log) is handled the same way, since
//   applying a Yjs state on top of ours merges.  Every `snapshotEvery`
//   operations (300 by default), an editor whose document holds exactly the
//   log's prefix 1..lastSeq (nothing pending, nothing seen beyond it) stores
//   store-snapshot {documentId, seq: lastSeq, data: <state update>}; when
//   two pages race, the server keeps the first and answers the other
//   stale_snapshot.

import { io } from "socket.io-client";
import * as parser from "socket.io-parser";
import * as Y from "yjs";

/** Transaction origin of updates that came from the server. */
export const REMOTE = Symbol("cowrite-remote");

// The server refuses operations above 64 KiB (max_operation_bytes); merged
// updates stay well below.  A single larger update cannot be produced by the
// textarea binding, which inserts long pastes in chunks.
const MERGE_LIMIT_BYTES = 24 * 1024;
const ACK_TIMEOUT_MS = 10_000;
const SYNC_PAGE = 200;
// socket.io-parser's Decoder refuses packets with more than 10 binary
// attachments by default (and closes the connection), but a join-document or
// sync ack carries one attachment per Yjs operation: up to the server's page
// size (100) for join, up to SYNC_PAGE for sync.
const MAX_ATTACHMENTS = 1000;

class Decoder extends parser.Decoder {
  constructor(opts) {
    super({ ...(typeof opts === "function" ? { reviver: opts } : opts), maxAttachments: MAX_ATTACHMENTS });
  }
}
const PRESENCE_INTERVAL_MS = 100; // the server allows 30 presence updates/s
const SNAPSHOT_EVERY = 300;
// A snapshot is stored after this long without local edits (not mid-typing).
const SNAPSHOT_IDLE_MS = 500;

function asBytes(value) {
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  return null;
}

function newOpId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/**
 * Events (EventTarget): "status" (detail: {state, pending}), "roster"
 * (detail: Map userId -> {userId, name, state}), "presence" (same), "role"
 * (detail: {role}), "error" (detail: {code, message}).
 */
export class DocumentSync extends EventTarget {
  constructor({ doc, documentId, userId, tokens, snapshotEvery = SNAPSHOT_EVERY }) {
    super();
    this.snapshotEvery = snapshotEvery;
    this.snapshotSeq = 0; // the newest snapshot we know of (received or stored)
    this._snapshotTimer = null;
    this._storingSnapshot = false;
    this.doc = doc;
    this.documentId = documentId;
    this.userId = userId;
    this.tokens = tokens;
    this.lastSeq = 0;
    this._seenAbove = new Set();
    this.outbox = []; // {id: string|null, update: Uint8Array, count: number}
    this.inFlight = null;
    this.joined = false;
    this.generation = 0;
    this.state = "connecting";
    this.stopped = false; // access denied or no token: no more attempts
    this.role = undefined; // from the join ack: owner, editor, viewer (null: no access)
    this.roster = new Map();
    this._presenceState = null;
    this._presenceTimer = null;
    this._presenceSentAt = 0;
    this._retryTimer = null;

    doc.on("update", (update, origin) => {
      if (origin === REMOTE) return;
      this.outbox.push({ id: null, update, count: 1 });
      this._emitStatus();
      queueMicrotask(() => this._flush());
    });

    this.socket = io({
      autoConnect: false,
      auth: (cb) => this._auth(cb),
      reconnectionDelay: 300,
      reconnectionDelayMax: 3000,
      timeout: 5000,
      parser: { ...parser, Decoder },
    });
    this.socket.on("connect", () => this._onConnect());
    this.socket.on("disconnect", (reason) => this._onDisconnect(reason));
    this.socket.on("connect_error", (err) => this._onConnectError(err));
    this.socket.on("remote-edit", (msg) => this._onRemoteEdit(msg));
    this.socket.on("user-joined", (msg) => this._onUserJoined(msg));
    this.socket.on("user-left", (msg) => this._onUserLeft(msg));
    this.socket.on("presence", (msg) => this._onPresence(msg));
    this.socket.on("resync", (msg) => {
      if (msg?.documentId === this.documentId) this._catchUp(this.generation);
    });
    this.socket.on("access-revoked", (msg) => {
      if (msg?.documentId === this.documentId) this._stop("access_denied", "Your access was revoked");
    });
    this.socket.on("server-draining", () => this._setState("reconnecting"));

    // A browser that knows it lost the network says so at once; a WebSocket
    // would only notice at the next missed heartbeat (25 s + 20 s).
    window.addEventListener("offline", () => {
      if (this.stopped) return;
      this.socket.disconnect();
      this._setState("offline");
    });
    window.addEventListener("online", () => {
      if (this.stopped) return;
      this._setState("reconnecting");
      this.socket.connect();
    });
  }

  start() {
    if (navigator.onLine === false) {
      this._setState("offline");
      return;
    }
    this.socket.connect();
  }

  /** Edits not yet acknowledged by the server (local Yjs updates). */
  get pending() {
    let n = 0;
    for (const entry of this.outbox) n += entry.count;
    return n;
  }

  // -- connection ------------------------------------------------------------

  async _auth(cb) {
    try {
      cb({ token: await this.tokens.get() });
    } catch (err) {
      // No token (offline, or no way to get one): the server refuses with
      // token_missing and _onConnectError decides what to do.
      console.warn("cowrite: no token:", err);
      cb({});
    }
  }

  _onConnect() {
    this.generation += 1;
    this._setState("syncing");
    this._catchUp(this.generation);
  }

  _onDisconnect(reason) {
    this.generation += 1; // acks of the old connection are ignored from now on
    this.joined = false;
    this.inFlight = null; // it stays first in the outbox, with its clientOpId
    clearTimeout(this._retryTimer);
    if (this.stopped) return;
    if (reason === "io server disconnect") {
      // The server ended the session (it does not say why): socket.io does
      // not reconnect by itself after this one.
      clearTimeout(this._retryTimer);
      this._retryTimer = setTimeout(() => this.socket.connect(), 1000 + Math.random() * 1000);
    }
    if (navigator.onLine === false) this._setState("offline");
    else if (reason === "io client disconnect") this._setState("offline");
    else this._setState("reconnecting");
  }

  _onConnectError(err) {
    if (this.stopped) return;
    const code = err?.data?.code;
    if (this.socket.active) {
      // A transport failure: the manager retries with backoff by itself.
      this._setState(navigator.onLine === false ? "offline" : "reconnecting");
      return;
    }
    // Refused by the server (CONNECT_ERROR): socket.io does not retry these.
    this.tokens.invalidate(); // expired, or minted with a secret the server no longer has
    if (code === "token_invalid" && this.tokens.fixed) {
      this._stop("token_invalid", "The token in the page address was refused");
      return;
    }
    this._setState("reconnecting");
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => this.socket.connect(), 1000 + Math.random() * 1000);
  }

  _stop(code, message) {
    this.stopReason = message;
    this.stopCode = code;
    this.stopped = true;
    this.joined = false;
    this.roster = new Map();
    if (code === "access_denied") this._setRole(null);
    this.socket.disconnect();
    this._setState("denied");
    this.dispatchEvent(new CustomEvent("error", { detail: { code, message } }));
  }

  _forceReconnect() {
    // Close the transport: the manager reconnects (and we join again).
    this.socket.io.engine?.close();
  }

  // -- catch-up --------------------------------------------------------------

  async _catchUp(gen) {
    this.joined = false;
    let ack;
    try {
      ack = await this.socket
        .timeout(ACK_TIMEOUT_MS)
        .emitWithAck("join-document", { documentId: this.documentId, since: this.lastSeq, snapshot: true });
    } catch {
      if (gen === this.generation) this._forceReconnect();
      return;
    }
    if (gen !== this.generation) return;
    if (!ack?.ok) {
      const code = ack?.error?.code;
      if (code === "access_denied") {
        this._stop(code, "You have no access to this document");
      } else {
        // unavailable, rate limited, ...: try again on a fresh connection.
        this._retryTimer = setTimeout(() => gen === this.generation && this._catchUp(gen), 1000);
      }
      return;
    }
    this._setRole(ack.role);
    this._setRoster(ack.presence || []);
    this._applyPage(ack);
    let more = ack.more;
    while (more) {
      let page;
      try {
        page = await this.socket
          .timeout(ACK_TIMEOUT_MS)
          .emitWithAck("sync", { documentId: this.documentId, since: this.lastSeq, limit: SYNC_PAGE });
      } catch {
        if (gen === this.generation) this._forceReconnect();
        return;
      }
      if (gen !== this.generation) return;
      if (!page?.ok) {
        this._forceReconnect();
        return;
      }
      this._applyPage(page);
      more = page.more;
    }
    this.joined = true;
    this._flush();
    if (this._presenceState) this._sendPresenceNow();
    this._setState("connected");
  }

  /** A join or sync ack: its snapshot (if any), then its operations. */
  _applyPage(ack) {
    const snapshot = ack.snapshot;
    if (snapshot && typeof snapshot.seq === "number") {
      const state = asBytes(snapshot.data);
      if (state) {
        try {
          Y.applyUpdate(this.doc, state, REMOTE);
        } catch (err) {
          console.error(`cowrite: snapshot ${snapshot.seq} is not a Yjs update`, err);
        }
      }
      // The log continues after the snapshot: what we had is merged into it.
      this.lastSeq = Math.max(this.lastSeq, snapshot.seq);
      for (const seq of this._seenAbove) if (seq <= this.lastSeq) this._seenAbove.delete(seq);
      this._advance();
      this.snapshotSeq = Math.max(this.snapshotSeq, snapshot.seq);
      this.dispatchEvent(
        new CustomEvent("snapshot", { detail: { seq: snapshot.seq, received: true, resync: ack.resync === true } }),
      );
    }
    for (const op of ack.ops || []) this._applyRemote(op.operation, op.seq);
    this._maybeSnapshot();
  }

  _applyRemote(operation, seq) {
    const update = asBytes(operation);
    if (update) {
      try {
        Y.applyUpdate(this.doc, update, REMOTE);
      } catch (err) {
        console.error(`cowrite: operation ${seq} is not a Yjs update`, err);
      }
    } else {
      console.warn(`cowrite: operation ${seq} is not binary; skipped`);
    }
    this._seen(seq);
  }

  _onRemoteEdit(msg) {
    if (!msg || msg.documentId !== this.documentId) return;
    this._applyRemote(msg.operation, msg.seq);
    this._maybeSnapshot();
  }

  // -- snapshots -------------------------------------------------------------

  /** Store a snapshot once `snapshotEvery` operations passed, after a quiet moment. */
  _maybeSnapshot() {
    if (this.snapshotEvery <= 0 || this.lastSeq - this.snapshotSeq < this.snapshotEvery) return;
    if (this.role !== "owner" && this.role !== "editor") return;
    clearTimeout(this._snapshotTimer);
    this._snapshotTimer = setTimeout(() => this._storeSnapshot(this.generation), SNAPSHOT_IDLE_MS);
  }

  async _storeSnapshot(gen) {
    // Our document must be exactly the log's prefix 1..lastSeq: no local edit
    // waiting, none in flight, no remote operation beyond a hole.
    if (!this.joined || this._storingSnapshot || gen !== this.generation) return;
    if (this.outbox.length > 0 || this.inFlight || this._seenAbove.size > 0) {
      this._maybeSnapshot(); // try again after the next quiet moment
      return;
    }
    const seq = this.lastSeq;
    if (seq - this.snapshotSeq < this.snapshotEvery) return;
    this._storingSnapshot = true;
    let ack;
    try {
      ack = await this.socket
        .timeout(ACK_TIMEOUT_MS)
        .emitWithAck("store-snapshot", { documentId: this.documentId, seq, data: Y.encodeStateAsUpdate(this.doc) });
    } catch {
      return; // no answer: the next operations try again
    } finally {
      this._storingSnapshot = false;
    }
    if (ack?.ok) {
      this.snapshotSeq = Math.max(this.snapshotSeq, seq);
      this.dispatchEvent(new CustomEvent("snapshot", { detail: { seq, received: false, resync: false } }));
    } else if (ack?.error?.code === "stale_snapshot") {
      this.snapshotSeq = Math.max(this.snapshotSeq, ack.error.latest || seq);
    } else if (ack?.error?.code === "read_only") {
      this._setRole("viewer");
    }
  }

  _seen(seq) {
    if (typeof seq !== "number" || seq <= this.lastSeq) return;
    this._seenAbove.add(seq);
    this._advance();
  }

  /** lastSeq over the contiguous run of operations seen beyond it. */
  _advance() {
    while (this._seenAbove.has(this.lastSeq + 1)) {
      this._seenAbove.delete(this.lastSeq + 1);
      this.lastSeq += 1;
    }
  }

  // -- sending ---------------------------------------------------------------

  _flush() {
    if (!this.joined || this.inFlight || !this.socket.connected || this.outbox.length === 0) return;
    if (this.role === "viewer") return;
    const outbox = this.outbox;
    if (outbox[0].id === null) {
      // Only the head can carry an id (it was sent before): merge what waits.
      let n = 1;
      let size = outbox[0].update.length;
      let count = outbox[0].count;
      while (n < outbox.length && size + outbox[n].update.length <= MERGE_LIMIT_BYTES) {
        size += outbox[n].update.length;
        count += outbox[n].count;
        n += 1;
      }
      if (n > 1) {
        const merged = Y.mergeUpdates(outbox.slice(0, n).map((e) => e.update));
        outbox.splice(0, n, { id: null, update: merged, count });
      }
      outbox[0].id = newOpId();
    }
    const entry = outbox[0];
    this.inFlight = entry;
    const gen = this.generation;
    this.socket
      .timeout(ACK_TIMEOUT_MS)
      .emit(
        "edit-operation",
        { documentId: this.documentId, operation: entry.update, clientOpId: entry.id },
        (err, ack) => this._onEditAck(gen, entry, err, ack),
      );
  }

  _onEditAck(gen, entry, err, ack) {
    if (gen !== this.generation || this.inFlight !== entry) return;
    this.inFlight = null;
    if (err) {
      // No ack in time: the connection is suspect.  The operation is resent
      // with the same clientOpId on the next connection.
      this._forceReconnect();
      return;
    }
    if (ack?.ok) {
      this.outbox.shift();
      this._seen(ack.seq);
      this._emitStatus();
      this._flush();
      this._maybeSnapshot();
      return;
    }
    const code = ack?.error?.code;
    if (code === "not_joined") {
      this._catchUp(gen);
    } else if (code === "read_only") {
      // Our role changed to viewer: what we typed since is not kept by the server.
      this._setRole("viewer");
      this.dispatchEvent(
        new CustomEvent("error", {
          detail: { code, message: "You are now a viewer of this document: your unsaved edits were not kept. Reload to see the document as saved." },
        }),
      );
      this._emitStatus();
    } else if (code === "access_denied") {
      this._stop(code, "You have no access to this document");
    } else if (code === "payload_too_large" || code === "invalid_payload") {
      // Cannot happen with updates from the textarea binding; keeping it would
      // block every later edit.
      this.outbox.shift();
      this.dispatchEvent(new CustomEvent("error", { detail: { code, message: ack.error.message } }));
      this._emitStatus();
      this._flush();
    } else {
      // rate_limited, unavailable: wait and resend the same operation.
      const delay = Math.max(200, 1000 * (ack?.error?.retryAfter || 1));
      clearTimeout(this._retryTimer);
      this._retryTimer = setTimeout(() => gen === this.generation && this._flush(), delay);
    }
  }

  /** Our role on the document (owner, editor, viewer; null: none), from the server. */
  _setRole(role) {
    if (role === this.role) return;
    this.role = role;
    this.dispatchEvent(new CustomEvent("role", { detail: { role } }));
  }

  /** The owner shares the document with `userId` ("*": anyone with the link); role null revokes. */
  async share(userId, role) {
    if (!this.joined) throw new Error("not connected");
    const ack = await this.socket
      .timeout(ACK_TIMEOUT_MS)
      .emitWithAck("share-document", { documentId: this.documentId, userId, role });
    if (!ack?.ok) throw new Error(ack?.error?.message || "share-document refused");
    return ack;
  }

  // -- presence --------------------------------------------------------------

  /** Our cursor and identity for the others; sent at most every 100 ms. */
  setPresence(state) {
    this._presenceState = state;
    if (!this.joined || this._presenceTimer) return;
    const wait = this._presenceSentAt + PRESENCE_INTERVAL_MS - Date.now();
    if (wait <= 0) this._sendPresenceNow();
    else this._presenceTimer = setTimeout(() => {
      this._presenceTimer = null;
      if (this.joined) this._sendPresenceNow();
    }, wait);
  }

  _sendPresenceNow() {
    clearTimeout(this._presenceTimer);
    this._presenceTimer = null;
    this._presenceSentAt = Date.now();
    this.socket.emit("presence-update", { documentId: this.documentId, state: this._presenceState });
  }

  _setRoster(entries) {
    this.roster = new Map();
    for (const e of entries) {
      if (e && typeof e.userId === "string") {
        this.roster.set(e.userId, { userId: e.userId, name: e.name || e.userId, state: e.state ?? null });
      }
    }
    this.dispatchEvent(new CustomEvent("roster", { detail: this.roster }));
  }

  _onUserJoined(msg) {
    if (!msg || msg.documentId !== this.documentId) return;
    const old = this.roster.get(msg.userId);
    this.roster.set(msg.userId, { userId: msg.userId, name: msg.name || msg.userId, state: old?.state ?? null });
    this.dispatchEvent(new CustomEvent("roster", { detail: this.roster }));
  }

  _onUserLeft(msg) {
    if (!msg || msg.documentId !== this.documentId) return;
    this.roster.delete(msg.userId);
    this.dispatchEvent(new CustomEvent("roster", { detail: this.roster }));
  }

  _onPresence(msg) {
    if (!msg || msg.documentId !== this.documentId || msg.userId === this.userId) return;
    const old = this.roster.get(msg.userId);
    const name = msg.state?.name || old?.name || msg.userId;
    this.roster.set(msg.userId, { userId: msg.userId, name, state: msg.state ?? null });
    this.dispatchEvent(new CustomEvent(old ? "presence" : "roster", { detail: this.roster }));
  }

  // -- status ----------------------------------------------------------------

  _setState(state) {
    this.state = state;
    this._emitStatus();
  }

  _emitStatus() {
    this.dispatchEvent(new CustomEvent("status", { detail: { state: this.state, pending: this.pending } }));
  }
}
