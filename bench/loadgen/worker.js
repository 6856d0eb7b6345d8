"use strict";
// Load-generator worker: owns a set of raw Engine.IO v4 / Socket.IO v5
// WebSocket clients. Every room lives wholly inside one worker, so the send
// timestamp and the receive timestamp come from the same performance.now()
// clock. Controlled by the coordinator (main.js) over the fork IPC channel.
//
// Two scenarios (config.scenario):
//   broadcast  `40`, `join` (ack), then `msg` events broadcast to the room;
//   collab     the collaboration path of issue 9: a JWT (HS256, minted here
//              with the shared secret) in the CONNECT packet's auth, then
//              `join-document` with an ack, then `edit-operation` events
//              {documentId, operation, clientOpId}, each with an ack id.
//              Measured: edit sent -> `remote-edit` received at the other
//              room members (hist), and edit sent -> its ack (ackHist).
const crypto = require("crypto");
const WebSocket = require("ws");
const { performance } = require("perf_hooks");
const { newHist, record } = require("./hist");
const { RawWs } = require("./rawws");

const T_KEY = Buffer.from('"t":');
const CH_0 = 0x30, CH_1 = 0x31, CH_2 = 0x32, CH_3 = 0x33, CH_4 = 0x34, CH_6 = 0x36;

let clients = [];
let counters = freshCounters();
let totalRecv = 0;
let lastMarkAt = performance.now();
let lastCpu = process.cpuUsage();
let sender = null; // { timer, rate, start, scheduled, rr }
let pad = "";
let maxBuffered = 64 * 1024;
let scenario = "broadcast";
let secret = ""; // collab: HS256 secret the tokens are minted with
let docsClaim = false; // collab: put {docs: {<doc>: "editor"}} in each token
let maxOutstanding = 2000; // collab: unacked edits per client before sends are skipped
let outstanding = 0; // collab: edits sent and not acknowledged yet (all clients)
let ackErrorSamples = {};

function freshCounters() {
  return {
    sent: 0, skipped: 0, recv: 0, bad: 0, pings: 0, closed: 0, hist: newHist(),
    acks: 0, ackErrors: 0, ackHist: newHist(), otherEvents: 0, unmatchedAcks: 0,
  };
}

const REMOTE_EDIT = Buffer.from('42["remote-edit",');

// HS256 JWT (RFC 7519) with the shared secret.
function mintToken(sub, doc) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub, name: sub, iat: now, exp: now + 6 * 3600 };
  if (docsClaim) claims.docs = { [doc]: "editor" };
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const body = enc({ alg: "HS256", typ: "JWT" }) + "." + enc(claims);
  return body + "." + crypto.createHmac("sha256", secret).update(body).digest("base64url");
}

function onCollabAck(client, data) {
  // 43<id>[...]: the ack of edit <id>.
  let id = 0;
  let i = 2;
  for (; i < data.length; i++) {
    const d = data[i] - CH_0;
    if (d < 0 || d > 9) break;
    id = id * 10 + d;
  }
  const sentAt = client.acks.get(id);
  if (sentAt === undefined) { counters.unmatchedAcks++; return; }
  client.acks.delete(id);
  outstanding--;
  record(counters.ackHist, (performance.now() - sentAt) * 1000);
  if (data.indexOf('"ok":true', i) >= 0) {
    counters.acks++;
  } else {
    counters.ackErrors++;
    const k = data.toString("utf8", i, Math.min(data.length, i + 160));
    if (Object.keys(ackErrorSamples).length < 20 || k in ackErrorSamples) {
      ackErrorSamples[k] = (ackErrorSamples[k] || 0) + 1;
    }
  }
}

function onSteadyMessage(client, data) {
  // data is a Buffer holding one Engine.IO packet.
  const c0 = data[0];
  if (c0 === CH_4) {
    if (scenario === "collab") {
      if (data[1] === CH_3) { onCollabAck(client, data); return; }
      if (data[1] === CH_2 && (data.length < REMOTE_EDIT.length || data.compare(REMOTE_EDIT, 0, REMOTE_EDIT.length, 0, REMOTE_EDIT.length) !== 0)) {
        counters.otherEvents++; // user-joined, presence...
        return;
      }
    }
    if (data[1] === CH_2) {
      const i = data.indexOf(T_KEY, 2);
      if (i < 0) { counters.bad++; return; }
      const t = parseFloat(data.toString("latin1", i + 4, i + 28));
      const now = performance.now();
      if (!(t > 0)) { counters.bad++; return; }
      record(counters.hist, (now - t) * 1000);
      counters.recv++;
      totalRecv++;
      return;
    }
    if (data[1] === CH_3) return; // late ack
    counters.bad++;
    return;
  }
  if (c0 === CH_2) { // ping -> pong
    client.ws.send("3");
    counters.pings++;
    return;
  }
  if (c0 === CH_6) return; // noop
  if (c0 === CH_1) { client.ws.terminate(); return; }
  counters.bad++;
}

let clientKind = "ws"; // "ws" (the ws package) or "raw" (rawws.js, no stream machinery)

// Opens one WebSocket; calls h.onMessage(Buffer) and h.onClose(reason) (once).
function openTransport(url, spec, timeoutMs, h) {
  if (clientKind === "ws") {
    const opts = { perMessageDeflate: false, handshakeTimeout: timeoutMs, skipUTF8Validation: true };
    if (spec.localAddress) opts.localAddress = spec.localAddress;
    const ws = new WebSocket(url, opts);
    let closed = false;
    const close = (r) => { if (!closed) { closed = true; h.onClose(r); } };
    ws.on("error", (e) => close("error: " + (e && (e.code || e.message))));
    ws.on("close", (code) => close("closed code " + code));
    ws.on("message", (data) => h.onMessage(data));
    return ws;
  }
  const u = new URL(url);
  return new RawWs({
    host: u.hostname, port: Number(u.port), path: u.pathname + u.search,
    localAddress: spec.localAddress, onOpen: () => {}, onMessage: h.onMessage, onClose: h.onClose,
  });
}

function connectOne(url, spec, timeoutMs, doJoin) {
  return new Promise((resolve) => {
    const client = { ws: null, room: spec.room, prefix: "", ok: false };
    const collab = scenario === "collab";
    if (collab) {
      client.user = spec.user;
      client.acks = new Map(); // ack id -> send time
      client.nextId = 1;
      // 42<id>["edit-operation",{"documentId":..,"clientOpId":..,"operation":{..,"t":<time>}}]
      client.mid = '["edit-operation",{"documentId":' + JSON.stringify(spec.room) +
        ',"clientOpId":"' + spec.user + '-';
    } else {
      client.prefix = "42" + JSON.stringify(["msg", spec.room]).slice(0, -1) + ',{"t":';
    }
    let stage = 0;
    let done = false;
    let timer = null;
    const finish = (err) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) {
        try { client.ws && client.ws.terminate(); } catch (_) { /* ignore */ }
        resolve({ err });
      } else {
        client.ok = true;
        resolve({ client });
      }
    };
    const onClose = (reason) => {
      if (client.ok) counters.closed++;
      if (client.acks) { outstanding -= client.acks.size; client.acks.clear(); }
      client.ok = false;
      finish("closed in stage " + stage + ": " + reason);
    };
    const onMessage = (data) => {
      if (stage === 3) { onSteadyMessage(client, data); return; }
      const s = data.toString();
      const ws = client.ws;
      if (s === "2") { ws.send("3"); return; }
      if (stage === 0) {
        if (s[0] !== "0") { finish("expected open packet, got " + s.slice(0, 80)); return; }
        stage = 1;
        ws.send(collab ? "40" + JSON.stringify({ token: mintToken(spec.user, spec.room) }) : "40");
      } else if (stage === 1) {
        if (!s.startsWith("40")) {
          finish((s.startsWith("44") ? "connect_error " : "expected 40 connect, got ") + s.slice(0, 120));
          return;
        }
        if (doJoin) {
          stage = 2;
          ws.send("420" + JSON.stringify([collab ? "join-document" : "join", spec.room]));
        } else {
          stage = 3;
          finish(null);
        }
      } else if (stage === 2) {
        if (!s.startsWith("430")) {
          if (s.startsWith("42")) return; // a broadcast from a room-mate: ignore during setup
          finish("expected 430 ack, got " + s.slice(0, 80));
          return;
        }
        if (collab && !s.includes('"ok":true')) { finish("join refused: " + s.slice(0, 160)); return; }
        stage = 3;
        finish(null);
      }
    };
    timer = setTimeout(() => finish("timeout in stage " + stage), timeoutMs);
    try {
      client.ws = openTransport(url, spec, timeoutMs, { onMessage, onClose });
    } catch (e) {
      finish("open failed: " + String(e && e.message));
    }
  });
}

async function doConnect(msg) {
  const { url, specs, concurrency, timeoutMs, join } = msg;
  const t0 = performance.now();
  const deadline = t0 + msg.totalTimeoutMs;
  let next = 0;
  let connected = 0;
  let failed = 0;
  const errors = {};
  const lat = [];
  async function runner() {
    while (next < specs.length && performance.now() < deadline) {
      const spec = specs[next++];
      const s = performance.now();
      const r = await connectOne(url, spec, timeoutMs, join);
      if (r.client) {
        clients.push(r.client);
        connected++;
        lat.push(performance.now() - s);
      } else {
        failed++;
        const k = String(r.err).slice(0, 120);
        errors[k] = (errors[k] || 0) + 1;
      }
    }
  }
  const n = Math.max(1, Math.min(concurrency, specs.length));
  await Promise.all(Array.from({ length: n }, runner));
  lat.sort((a, b) => a - b);
  const pick = (q) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(q * lat.length))] : null);
  return {
    connected, failed, skipped: specs.length - connected - failed, errors,
    elapsedMs: performance.now() - t0,
    handshakeMs: { p50: pick(0.5), p95: pick(0.95), p99: pick(0.99) },
  };
}

function startSending(rate) {
  stopSending();
  const live = clients.filter((c) => c.ok);
  if (!live.length || rate <= 0) return { clients: live.length };
  const s = { rate, start: performance.now(), scheduled: 0, rr: 0, live, timer: null };
  const suffix = ',"pad":"' + pad + '"}]';
  // collab: the operation is {"type":"insert","pos":N,"text":"<pad>","t":<send time>}.
  const opMid = '","operation":{"type":"insert","pos":';
  const opText = ',"text":"' + pad + '","t":';
  const collab = scenario === "collab";
  const tick = () => {
    const now = performance.now();
    const target = Math.floor((rate * (now - s.start)) / 1000);
    let due = target - s.scheduled;
    const cap = Math.max(1, Math.ceil(rate * 0.05)); // never burst more than 50 ms of sends
    if (due > cap) { s.scheduled += due - cap; counters.skipped += due - cap; due = cap; }
    for (let k = 0; k < due; k++) {
      const c = s.live[s.rr];
      s.rr = (s.rr + 1) % s.live.length;
      if (!c.ok || c.ws.bufferedAmount > maxBuffered) { counters.skipped++; continue; }
      if (collab) {
        if (c.acks.size >= maxOutstanding) { counters.skipped++; continue; }
        const id = c.nextId++;
        const t = performance.now();
        c.ws.send("42" + id + c.mid + id + opMid + (id % 1000) + opText + t.toFixed(3) + "}}]");
        c.acks.set(id, t);
        outstanding++;
      } else {
        c.ws.send(c.prefix + performance.now().toFixed(3) + suffix);
      }
      counters.sent++;
    }
    s.scheduled += due;
  };
  s.timer = setInterval(tick, 2);
  sender = s;
  return { clients: live.length };
}

function stopSending() {
  if (sender) clearInterval(sender.timer);
  sender = null;
}

function mark() {
  const now = performance.now();
  const cpu = process.cpuUsage(lastCpu);
  const out = {
    elapsedMs: now - lastMarkAt,
    cpuUs: cpu.user + cpu.system,
    sent: counters.sent, skipped: counters.skipped, recv: counters.recv, bad: counters.bad,
    pings: counters.pings, closed: counters.closed,
    hist: Array.from(counters.hist),
    live: clients.filter((c) => c.ok).length,
    acks: counters.acks, ackErrors: counters.ackErrors, unmatchedAcks: counters.unmatchedAcks,
    otherEvents: counters.otherEvents, ackHist: Array.from(counters.ackHist),
    ackErrorSamples, outstanding,
  };
  ackErrorSamples = {};
  counters = freshCounters();
  lastMarkAt = now;
  lastCpu = process.cpuUsage();
  return out;
}

function closeAll() {
  stopSending();
  let n = 0;
  for (const c of clients) {
    if (c.acks) { outstanding -= c.acks.size; c.acks.clear(); }
    c.ok = false;
    try { c.ws.terminate(); n++; } catch (_) { /* ignore */ }
  }
  clients = [];
  return { closed: n };
}

process.on("message", async (msg) => {
  let res;
  try {
    switch (msg.cmd) {
      case "config":
        pad = "x".repeat(msg.padLen || 0);
        maxBuffered = msg.maxBuffered || maxBuffered;
        clientKind = msg.client || clientKind;
        scenario = msg.scenario || scenario;
        secret = msg.secret || secret;
        docsClaim = Boolean(msg.docsClaim);
        maxOutstanding = msg.maxOutstanding || maxOutstanding;
        res = {};
        break;
      case "connect": res = await doConnect(msg); break;
      case "start": res = startSending(msg.rate); break;
      case "stop": stopSending(); res = {}; break;
      case "mark": res = mark(); break;
      case "total": res = { totalRecv, live: clients.filter((c) => c.ok).length, outstanding }; break;
      case "close": res = closeAll(); break;
      case "exit": closeAll(); process.send({ id: msg.id, ok: true }); setTimeout(() => process.exit(0), 50); return;
      default: res = { error: "unknown cmd " + msg.cmd };
    }
    process.send({ id: msg.id, ok: !res.error, ...res });
  } catch (e) {
    process.send({ id: msg.id, ok: false, error: String((e && e.stack) || e) });
  }
});
process.on("disconnect", () => process.exit(0));
process.send({ ready: true, pid: process.pid });
