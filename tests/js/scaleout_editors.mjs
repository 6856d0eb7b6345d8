// Editors on the official socket.io-client, for the scale-out tests
// (tests/scaleout): several editors of one document in one Node process, each
// bound to its own source address (so that nginx's ip_hash spreads them over
// the instances), reconnecting with the client's own jittered backoff
// (reconnectionDelay 1000 ms, randomizationFactor 0.5) and, after each
// reconnection, rejoining with `since` and resending its unacknowledged
// operations with the same clientOpId.
//
// The catch-up boundary is checked where the client sees packets, in arrival
// order: from the join-document emit until the acknowledgement of the last
// catch-up page (the join's own when it has no `more`), a remote-edit on that
// connection is a violation (the server holds live operations for a member
// still catching up).  The flag is cleared inside the ack callback itself,
// not after an `await` (a remote-edit in the same polling payload is
// dispatched before a promise continuation runs).
//
// argv[2]: {"url", "documentId", "hardTimeout", "editors": [{label, sourceIp,
//           transports, token}]}
// stdin  <- {"id": n, "cmd": "connect", "ms"}        connect + join every editor
//           {"id": n, "cmd": "edit", "count", "intervalMs", "window", "ms", "labels"?}
//                                                    each editor sends `count`
//                                                    operations; resolves when all
//                                                    are acknowledged
//           {"id": n, "cmd": "waitHead", "head", "ms"} every editor's view holds 1..head
//           {"id": n, "cmd": "hops", "labels", "addresses", "rounds", "lagMax", "ms"}
//                                                    each listed editor, `rounds` times:
//                                                    drop its connection, connect from the
//                                                    next of `addresses` (so through
//                                                    another instance) and rejoin with
//                                                    `since` = head - random(0..lagMax)
//           {"id": n, "cmd": "report"}               final sync, then every editor's record
//           {"id": n, "cmd": "exit"}
// stdout -> {"ready": true} once, then {"id": n, "ok": true, "result": ...}
//           or {"id": n, "ok": false, "error": "..."}
// Every wait is bounded; the process exits at the hard deadline whatever happens.
import http from "node:http";
import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const cfg = JSON.parse(process.argv[2] ?? "{}");
const ACK_MS = 8000;
const PAGE = 100;
const RETRYABLE = new Set(["not_joined", "unavailable", "not_connected"]);

function send(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function quit(code) {
  process.stdout.write("", () => process.exit(code));
}

const hard = setTimeout(() => {
  send({ fatal: "hard timeout" });
  quit(3);
}, cfg.hardTimeout ?? 90000);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(predicate, ms, what) {
  const deadline = performance.now() + ms;
  while (!predicate()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what()}`);
    await sleep(10);
  }
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

class Editor {
  constructor(spec) {
    this.label = spec.label;
    this.sourceIp = spec.sourceIp;
    this.transports = spec.transports;
    this.doc = cfg.documentId;
    this.view = new Map(); // seq -> [clientOpId, operation]
    this.acked = {}; // clientOpId -> seq
    this.unacked = new Map(); // clientOpId -> operation, in sending order
    this.generation = new Map(); // clientOpId -> emit generation (stale acks are ignored)
    this.conflicts = [];
    this.sessionDuplicates = [];
    this.orderViolations = [];
    this.errors = [];
    this.ackErrors = [];
    this.disconnects = [];
    this.reconnectSeconds = [];
    this.reconnectParts = []; // [backoff, connect, join] seconds of each reconnection
    this.attemptAt = null;
    this.connectedAt = null;
    this.drainToRejoinSeconds = [];
    this.drains = [];
    this.resends = 0;
    this.sessions = 0;
    this.joined = false;
    this.joining = false;
    this.disconnectedAt = null;
    this.drainedAt = null;
    this.sessionSeen = new Set();
    this.lastRemote = 0;
    this.transportUsed = [];
    this.token = spec.token;
    this.catchingUp = false; // between the join emit and the last catch-up ack
    this.joinSince = 0;
    this.lag = 0; // rejoin with since = head - lag (a hop's catch-up)
    this.hopping = false;
    this.boundaryViolations = [];
    // What a check placed after `await` (in the promise continuation) would
    // call early: remote-edits dispatched between the join's ack callback and
    // the continuation of the awaiting code.  Not violations; counted to show
    // the difference (issue 14's once-seen report looks like one of these).
    this.awaitingJoin = false;
    this.seenBeforeContinuation = 0;
    this.rejoins = [];
    this.openSocket(spec.sourceIp);
  }

  openSocket(sourceIp) {
    this.sourceIp = sourceIp;
    this.agent = new http.Agent({ localAddress: sourceIp, keepAlive: true });
    this.socket = io(cfg.url, {
      transports: this.transports,
      upgrade: false,
      forceNew: true,
      // The official client's reconnection, with its documented defaults.
      reconnection: true,
      reconnectionDelay: 1000,
      reconnectionDelayMax: 5000,
      randomizationFactor: 0.5,
      reconnectionAttempts: 10,
      timeout: 5000,
      agent: this.agent,
      auth: { token: this.token },
      autoConnect: false,
    });
    this.socket.on("connect", () => this.onConnect());
    this.socket.io.on("reconnect_attempt", () => {
      this.attemptAt = performance.now();
    });
    this.socket.on("disconnect", (reason) => this.onDisconnect(reason));
    this.socket.on("remote-edit", (e) => this.onRemoteEdit(e));
    this.socket.on("server-draining", (d) => {
      this.drainedAt = performance.now();
      this.drains.push(d);
    });
    this.socket.on("resync", (d) => {
      const session = this.sessions;
      this.catchUp(d.since, false).catch((err) => {
        // A hop or a reconnection meanwhile: the rejoin catches up instead.
        if (session === this.sessions) this.errors.push(`resync: ${err}`);
      });
    });
    this.socket.on("connect_error", (err) => this.errors.push(`connect_error: ${err.message}`));
  }

  // -- the log this client knows ------------------------------------------------

  add(source, seq, clientOpId, operation) {
    const entry = [clientOpId, operation];
    const known = this.view.get(seq);
    if (known !== undefined && !same(known, entry)) {
      this.conflicts.push({ source, seq, known, got: entry });
      return;
    }
    this.view.set(seq, entry);
  }

  // An operation the server sent on the current connection: exactly once per connection.
  delivered(source, seq, clientOpId, operation) {
    if (this.sessionSeen.has(seq)) this.sessionDuplicates.push({ source, seq, session: this.sessions });
    this.sessionSeen.add(seq);
    this.add(source, seq, clientOpId, operation);
  }

  head() {
    let n = 0;
    while (this.view.has(n + 1)) n += 1;
    return n;
  }

  // -- connection life -------------------------------------------------------------

  onConnect() {
    this.connectedAt = performance.now();
    this.sessions += 1;
    this.sessionSeen = new Set();
    this.lastRemote = 0;
    this.transportUsed.push(this.socket.io.engine.transport.name);
    this.rejoin().catch((err) => this.errors.push(`rejoin: ${err}`));
  }

  async rejoin() {
    this.joining = true;
    const session = this.sessions;
    const since = Math.max(0, this.head() - this.lag);
    this.lag = 0;
    this.joinSince = since;
    this.catchingUp = true;
    this.awaitingJoin = true;
    const ack = await this.call("join-document", { documentId: this.doc, since }, (a) => {
      if (session === this.sessions && a && a.ok && !a.more) this.catchingUp = false;
    });
    this.awaitingJoin = false;
    if (session !== this.sessions) return;
    if (!ack.ok) throw new Error(`join refused: ${JSON.stringify(ack)}`);
    this.rejoins.push({
      session,
      since,
      transport: this.socket.io.engine.transport.name,
      sid: this.socket.io.engine.id,
      ops: ack.ops.length,
      more: ack.more,
    });
    for (const op of ack.ops) this.delivered("join", op.seq, op.clientOpId, op.operation);
    if (ack.more) await this.catchUp(ack.ops.length ? ack.ops[ack.ops.length - 1].seq : since, true);
    if (session !== this.sessions) return;
    this.joined = true;
    this.joining = false;
    if (this.disconnectedAt !== null) {
      const now = performance.now();
      this.reconnectSeconds.push((now - this.disconnectedAt) / 1000);
      const attempt = this.attemptAt ?? this.disconnectedAt;
      this.reconnectParts.push([
        (attempt - this.disconnectedAt) / 1000,
        (this.connectedAt - attempt) / 1000,
        (now - this.connectedAt) / 1000,
      ]);
      if (this.drainedAt !== null) {
        this.drainToRejoinSeconds.push((performance.now() - this.drainedAt) / 1000);
      }
      this.disconnectedAt = null;
      this.drainedAt = null;
      this.attemptAt = null;
    }
    for (const [clientOpId, operation] of this.unacked) {
      this.resends += 1;
      this.emitEdit(clientOpId, operation);
    }
  }

  async catchUp(since, duringJoin) {
    let last = since;
    const session = this.sessions;
    const onAck = (a) => {
      if (duringJoin && session === this.sessions && a && a.ok && !a.more) this.catchingUp = false;
    };
    for (let page = 0; page < 1000; page += 1) {
      const ack = await this.call("sync", { documentId: this.doc, since: last, limit: PAGE }, onAck);
      if (!ack.ok) throw new Error(`sync refused: ${JSON.stringify(ack)}`);
      for (const op of ack.ops) this.delivered(duringJoin ? "join" : "sync", op.seq, op.clientOpId, op.operation);
      if (ack.ops.length) last = ack.ops[ack.ops.length - 1].seq;
      if (!ack.more) return;
    }
    throw new Error("sync never ended");
  }

  onDisconnect(reason) {
    this.joined = false;
    this.joining = false;
    this.catchingUp = false;
    this.awaitingJoin = false;
    this.disconnectedAt = performance.now();
    this.disconnects.push(reason);
    if (this.hopping) return; // our own hop: it connects again at once
    if (reason === "io server disconnect" || reason === "io client disconnect") {
      // The client does not reconnect by itself after these.
      if (!this.closing) this.errors.push(`disconnected for good: ${reason}`);
    }
  }

  onRemoteEdit(e) {
    if (e.documentId !== this.doc) return;
    if (this.awaitingJoin) this.seenBeforeContinuation += 1;
    if (this.catchingUp) {
      this.boundaryViolations.push({
        seq: e.seq,
        since: this.joinSince,
        session: this.sessions,
        transport: this.socket.io.engine.transport.name,
      });
    }
    if (e.seq <= this.lastRemote) this.orderViolations.push({ after: this.lastRemote, got: e.seq });
    this.lastRemote = e.seq;
    this.delivered("remote-edit", e.seq, e.clientOpId, e.operation);
  }

  // `onAck` runs inside the ack callback, in packet order with the listeners.
  call(event, payload, onAck) {
    return new Promise((resolve, reject) => {
      this.socket.timeout(ACK_MS).emit(event, payload, (err, ack) => {
        if (err) {
          reject(new Error(`no ack for ${event}: ${err.message}`));
          return;
        }
        if (onAck) onAck(ack);
        resolve(ack);
      });
    });
  }

  // Leave this connection and come back from `sourceIp` (through the instance
  // nginx sends that address to), rejoining with since = head - lag.
  async hop(sourceIp, lag, ms) {
    this.hopping = true;
    this.socket.disconnect();
    this.agent.destroy();
    this.hopping = false;
    this.lag = lag;
    this.openSocket(sourceIp);
    this.socket.connect();
    await until(() => this.joined, ms, () => `${this.label}: not joined after hop (${this.errors.slice(-2)})`);
  }

  // -- editing ---------------------------------------------------------------------

  emitEdit(clientOpId, operation) {
    const generation = (this.generation.get(clientOpId) ?? 0) + 1;
    this.generation.set(clientOpId, generation);
    const payload = { documentId: this.doc, operation, clientOpId };
    this.socket.timeout(ACK_MS).emit("edit-operation", payload, (err, ack) => {
      if (this.generation.get(clientOpId) !== generation || !this.unacked.has(clientOpId)) return;
      if (err) return; // lost with its connection (or late): resent after the rejoin
      if (!ack.ok) {
        this.ackErrors.push({ clientOpId, error: ack.error });
        if (RETRYABLE.has(ack.error?.code)) {
          setTimeout(() => {
            if (this.joined && this.unacked.has(clientOpId)) this.emitEdit(clientOpId, operation);
          }, 100);
        }
        return;
      }
      const before = this.acked[clientOpId];
      if (before !== undefined && before !== ack.seq) {
        this.conflicts.push({ source: "ack", clientOpId, seq: ack.seq, before });
      }
      this.acked[clientOpId] = ack.seq;
      this.unacked.delete(clientOpId);
      this.add("ack", ack.seq, clientOpId, operation);
    });
  }

  async edit(count, intervalMs, window, ms) {
    const deadline = performance.now() + ms;
    for (let i = 0; i < count; i += 1) {
      await until(() => this.unacked.size < window, Math.max(deadline - performance.now(), 1),
        () => `${this.label}: window full at op ${i}`);
      const clientOpId = `${this.label}-${i}`;
      const operation = { by: this.label, i, t: Date.now() };
      this.unacked.set(clientOpId, operation);
      if (this.joined) this.emitEdit(clientOpId, operation);
      await sleep(intervalMs);
    }
    await until(() => this.unacked.size === 0, Math.max(deadline - performance.now(), 1),
      () => `${this.label}: ${this.unacked.size} unacknowledged (joined=${this.joined})`);
  }

  async report() {
    // The final sync: the whole stored log, paged.
    const finalLog = [];
    let since = 0;
    for (let page = 0; page < 1000; page += 1) {
      const ack = await this.call("sync", { documentId: this.doc, since, limit: PAGE });
      if (!ack.ok) throw new Error(`final sync refused: ${JSON.stringify(ack)}`);
      for (const op of ack.ops) finalLog.push([op.seq, op.clientOpId, op.operation]);
      if (ack.ops.length) since = ack.ops[ack.ops.length - 1].seq;
      if (!ack.more) break;
    }
    return {
      label: this.label,
      kind: "node",
      transports: this.transports,
      sourceIp: this.sourceIp,
      view: [...this.view.entries()].sort((a, b) => a[0] - b[0]).map(([s, [c, o]]) => [s, c, o]),
      acked: this.acked,
      unacked: [...this.unacked.keys()],
      conflicts: this.conflicts,
      sessionDuplicates: this.sessionDuplicates,
      orderViolations: this.orderViolations,
      errors: this.errors,
      ackErrors: this.ackErrors,
      disconnects: this.disconnects,
      reconnectSeconds: this.reconnectSeconds,
      reconnectParts: this.reconnectParts,
      drainToRejoinSeconds: this.drainToRejoinSeconds,
      drains: this.drains,
      resends: this.resends,
      sessions: this.sessions,
      transportUsed: this.transportUsed,
      boundaryViolations: this.boundaryViolations,
      seenBeforeContinuation: this.seenBeforeContinuation,
      rejoins: this.rejoins,
      finalLog,
    };
  }

  close() {
    this.closing = true;
    this.socket.disconnect();
    this.agent.destroy();
  }
}

const editors = (cfg.editors ?? []).map((spec) => new Editor(spec));

const commands = {
  async connect(msg) {
    for (const e of editors) e.socket.connect();
    await until(() => editors.every((e) => e.joined), msg.ms ?? 10000,
      () => `not joined: ${editors.filter((e) => !e.joined).map((e) => `${e.label} ${e.errors.slice(-2)}`)}`);
    return editors.map((e) => ({ label: e.label, transport: e.socket.io.engine.transport.name }));
  },
  async edit(msg) {
    const chosen = editors.filter((e) => !msg.labels || msg.labels.includes(e.label));
    await Promise.all(chosen.map((e) => e.edit(msg.count, msg.intervalMs ?? 0, msg.window ?? 1, msg.ms ?? 30000)));
    return null;
  },
  async hops(msg) {
    const deadline = performance.now() + (msg.ms ?? 30000);
    const chosen = editors.filter((e) => msg.labels.includes(e.label));
    let done = 0;
    await Promise.all(
      chosen.map(async (e, k) => {
        for (let round = 0; round < msg.rounds && performance.now() < deadline; round += 1) {
          const address = msg.addresses[(k + round + 1) % msg.addresses.length];
          const lag = Math.floor(Math.random() * ((msg.lagMax ?? 0) + 1));
          await e.hop(address, lag, Math.max(deadline - performance.now(), 1));
          done += 1;
          await sleep(Math.floor(Math.random() * 30));
        }
      }),
    );
    return { rounds: done };
  },
  async waitHead(msg) {
    await until(() => editors.every((e) => e.head() >= msg.head), msg.ms ?? 10000,
      () => `heads ${editors.map((e) => `${e.label}=${e.head()}`)} < ${msg.head}`);
    return null;
  },
  async report() {
    const reports = [];
    for (const e of editors) reports.push(await e.report());
    return reports;
  },
  async exit() {
    for (const e of editors) e.close();
    await sleep(100); // let the DISCONNECT packets out
    clearTimeout(hard);
    send({ id: -1, ok: true, result: "bye" });
    quit(0);
    return null;
  },
};

const rl = createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (!line.trim()) return;
  let msg;
  try {
    msg = JSON.parse(line);
  } catch (err) {
    send({ fatal: `bad command line: ${err}` });
    return;
  }
  const handler = commands[msg.cmd];
  if (!handler) {
    send({ id: msg.id, ok: false, error: `unknown command ${msg.cmd}` });
    return;
  }
  handler(msg).then(
    (result) => send({ id: msg.id, ok: true, result }),
    (err) => send({ id: msg.id, ok: false, error: String((err && err.stack) || err) }),
  );
});
rl.on("close", () => {
  for (const e of editors) e.close();
  clearTimeout(hard);
  setTimeout(() => quit(0), 100);
});
send({ ready: true });
