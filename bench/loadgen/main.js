"use strict";
// Load-generator coordinator. Forks N worker processes (each owning whole
// rooms of clients) and takes JSON-line commands on stdin, answering with
// JSON lines on stdout. Driven by bench/run.py; usable by hand too:
//   echo '{"id":1,"cmd":"connect","url":"ws://127.0.0.1:3001/socket.io/?EIO=4&transport=websocket","count":10}' | node main.js --workers 1
const { fork } = require("child_process");
const path = require("path");
const readline = require("readline");
const { NBUCKETS, summarize } = require("./hist");

function arg(name, dflt) {
  const i = process.argv.indexOf("--" + name);
  return i >= 0 ? process.argv[i + 1] : dflt;
}
const nWorkers = Math.max(1, Number(arg("workers", 1)));
const maxLifetimeS = Number(arg("max-lifetime", 3600)); // hard stop: the generator never outlives this

const workers = [];
let reqId = 0;
const pending = new Map();

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function call(w, msg) {
  return new Promise((resolve, reject) => {
    const id = ++reqId;
    pending.set(id, { resolve, reject });
    w.send({ ...msg, id });
  });
}
const callAll = (mk) => Promise.all(workers.map((w, i) => call(w, mk(i))));

async function startWorkers() {
  const ready = [];
  for (let i = 0; i < nWorkers; i++) {
    const w = fork(path.join(__dirname, "worker.js"), [], {
      stdio: ["ignore", "inherit", "inherit", "ipc"],
      // e.g. LOADGEN_WORKER_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" to profile workers
      execArgv: (process.env.LOADGEN_WORKER_ARGS || "").split(" ").filter(Boolean),
    });
    w.on("message", (m) => {
      if (m.ready) { w.pidReady && w.pidReady(m.pid); return; }
      const p = pending.get(m.id);
      if (p) { pending.delete(m.id); p.resolve(m); }
    });
    w.on("exit", (code) => {
      if (!shuttingDown) { out({ event: "worker_exit", worker: i, code }); process.exit(3); }
    });
    ready.push(new Promise((r) => { w.pidReady = r; }));
    workers.push(w);
  }
  return Promise.all(ready);
}

function sumField(rs, f) {
  return rs.reduce((a, r) => a + (r[f] || 0), 0);
}

async function handle(msg) {
  switch (msg.cmd) {
    case "config":
      await callAll(() => ({
        cmd: "config", padLen: msg.padLen, maxBuffered: msg.maxBuffered, client: msg.client,
        scenario: msg.scenario, secret: msg.secret, docsClaim: msg.docsClaim, maxOutstanding: msg.maxOutstanding,
      }));
      return {};
    case "connect": {
      // Clients are grouped into rooms of roomSize; room r is owned by worker r % W.
      const count = msg.count;
      const roomSize = msg.roomSize || 5;
      const perIp = msg.perIp || 0; // >0: bind client i to 127.0.0.(2 + floor(i / perIp))
      const prefix = msg.roomPrefix || "room-";
      const specs = workers.map(() => []);
      for (let i = 0; i < count; i++) {
        const room = Math.floor(i / roomSize);
        // collab: client i is user "u-<prefix><i>" in document "<prefix><room>"
        // (bench/run.py grants exactly these pairs).
        const spec = { room: prefix + room, user: "u-" + prefix + i };
        if (perIp > 0) spec.localAddress = "127.0.0." + (2 + Math.floor(i / perIp));
        specs[room % workers.length].push(spec);
      }
      const conc = Math.max(1, Math.ceil((msg.concurrency || 100) / workers.length));
      const t0 = Date.now();
      const rs = await callAll((i) => ({
        cmd: "connect", url: msg.url, specs: specs[i], concurrency: conc,
        timeoutMs: msg.timeoutMs || 20000, totalTimeoutMs: msg.totalTimeoutMs || 300000,
        join: msg.join !== false,
      }));
      const elapsedMs = Date.now() - t0;
      const errors = {};
      for (const r of rs) for (const [k, v] of Object.entries(r.errors || {})) errors[k] = (errors[k] || 0) + v;
      const connected = sumField(rs, "connected");
      return {
        connected, failed: sumField(rs, "failed"), skipped: sumField(rs, "skipped"), errors, elapsedMs,
        rate: connected / (elapsedMs / 1000), perWorker: rs.map((r) => ({ connected: r.connected, elapsedMs: r.elapsedMs, handshakeMs: r.handshakeMs })),
      };
    }
    case "start": {
      // msg.rate = aggregate sends/s, split by each worker's share of live clients.
      const totals = await callAll(() => ({ cmd: "total" }));
      const live = sumField(totals, "live");
      const rs = await callAll((i) => ({ cmd: "start", rate: live ? (msg.rate * totals[i].live) / live : 0 }));
      return { clients: sumField(rs, "clients") };
    }
    case "stop":
      await callAll(() => ({ cmd: "stop" }));
      return {};
    case "mark": {
      const rs = await callAll(() => ({ cmd: "mark" }));
      const hist = new Float64Array(NBUCKETS);
      const ackHist = new Float64Array(NBUCKETS);
      for (const r of rs) for (let i = 0; i < NBUCKETS; i++) { hist[i] += r.hist[i]; ackHist[i] += r.ackHist[i]; }
      const ackErrorSamples = {};
      for (const r of rs) for (const [k, v] of Object.entries(r.ackErrorSamples || {})) ackErrorSamples[k] = (ackErrorSamples[k] || 0) + v;
      const res = {
        elapsedMs: Math.max(...rs.map((r) => r.elapsedMs)),
        workerCpuUs: sumField(rs, "cpuUs"),
        sent: sumField(rs, "sent"), skipped: sumField(rs, "skipped"), recv: sumField(rs, "recv"),
        bad: sumField(rs, "bad"), pings: sumField(rs, "pings"), closed: sumField(rs, "closed"),
        live: sumField(rs, "live"), latency: summarize(hist),
        acks: sumField(rs, "acks"), ackErrors: sumField(rs, "ackErrors"),
        unmatchedAcks: sumField(rs, "unmatchedAcks"), otherEvents: sumField(rs, "otherEvents"),
        outstanding: sumField(rs, "outstanding"), ackLatency: summarize(ackHist), ackErrorSamples,
      };
      return res;
    }
    case "total": {
      const rs = await callAll(() => ({ cmd: "total" }));
      return { totalRecv: sumField(rs, "totalRecv"), live: sumField(rs, "live"), outstanding: sumField(rs, "outstanding") };
    }
    case "close": {
      const rs = await callAll(() => ({ cmd: "close" }));
      return { closed: sumField(rs, "closed") };
    }
    case "exit":
      shutdown(0);
      return {};
    default:
      return { error: "unknown cmd " + msg.cmd };
  }
}

let shuttingDown = false;
function shutdown(code) {
  if (shuttingDown) return;
  shuttingDown = true;
  for (const w of workers) { try { w.send({ cmd: "exit", id: 0 }); } catch (_) { /* ignore */ } }
  setTimeout(() => {
    for (const w of workers) { try { w.kill("SIGKILL"); } catch (_) { /* ignore */ } }
    process.exit(code);
  }, 500);
}

async function main() {
  const pids = await startWorkers();
  out({ event: "ready", pid: process.pid, workerPids: pids });
  setTimeout(() => { out({ event: "max_lifetime" }); shutdown(4); }, maxLifetimeS * 1000).unref();
  const rl = readline.createInterface({ input: process.stdin });
  // Commands run one at a time, in order.
  let chain = Promise.resolve();
  rl.on("line", (line) => {
    if (!line.trim()) return;
    let msg;
    try { msg = JSON.parse(line); } catch (e) { out({ ok: false, error: "bad json" }); return; }
    chain = chain.then(async () => {
      try {
        const res = await handle(msg);
        out({ id: msg.id, ok: !res.error, ...res });
      } catch (e) {
        out({ id: msg.id, ok: false, error: String((e && e.stack) || e) });
      }
    });
  });
  rl.on("close", () => chain.then(() => shutdown(0)));
}
process.on("SIGTERM", () => shutdown(0));
main();
