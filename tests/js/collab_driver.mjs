// A remote-controlled official socket.io-client, driven line by line by the
// Python end-to-end tests (tests/e2e).
//
// Protocol (one JSON object per line, binary values as {"$bin": base64} both ways):
//   stdin  <- {"id": n, "cmd": "connect", "url", "transports", "auth", "upgrade"}
//             {"id": n, "cmd": "call", "event", "args", "ms"}   emit with an ack (timeout ms)
//             {"id": n, "cmd": "emit", "event", "args"}              no ack
//             {"id": n, "cmd": "kill"}        abort the transport (no Engine.IO CLOSE)
//             {"id": n, "cmd": "disconnect"}  a clean client disconnect
//             {"id": n, "cmd": "reconnect", "url"?, "auth"?}   socket.connect() again
//                                             (same Socket object: it offers {pid, offset})
//             {"id": n, "cmd": "state"}       {id, connected, recovered}
//   "connect" takes "reconnection" (default false) and "reconnectionDelay" (ms);
//   with "reconnection" every (re)connect is reported as
//             {"event": "$connect", "args": [{"id", "recovered"}]}
//             {"id": n, "cmd": "exit"}
//   stdout -> {"id": n, "ok": true, "result": ...} | {"id": n, "ok": false, "error": "..."}
//             {"event": name, "args": [...]}   every event the server sends, in order
//             {"event": "$disconnect", "args": [reason]}
// Commands are handled as they arrive, so calls sent back to back are in flight
// together (their acks may be reported in any order).  The process exits on
// "exit", when stdin closes, or at the hard deadline (argv[2] {"hardTimeout": ms}).
import http from "node:http";
import { createInterface } from "node:readline";
import { io } from "socket.io-client";
import { connection, decode, encode, sleep } from "./lib.mjs";

const cfg = JSON.parse(process.argv[2] ?? "{}");
let socket = null;

function send(obj) {
  process.stdout.write(JSON.stringify(encode(obj)) + "\n");
}

function quit(code) {
  process.stdout.write("", () => process.exit(code));
}

const hard = setTimeout(() => {
  send({ fatal: "hard timeout" });
  quit(3);
}, cfg.hardTimeout ?? 60000);

function callWithAck(event, args, ms) {
  return new Promise((resolve, reject) => {
    socket.timeout(ms).emit(event, ...args, (err, ...ack) => {
      if (err) reject(new Error(`no ack for "${event}" within ${ms} ms`));
      else resolve(ack);
    });
  });
}

const commands = {
  async connect(msg) {
    if (socket) socket.disconnect();
    socket = io(msg.url, {
      transports: msg.transports ?? ["websocket"],
      upgrade: msg.upgrade ?? false,
      reconnection: msg.reconnection ?? false,
      reconnectionDelay: msg.reconnectionDelay ?? 1000,
      randomizationFactor: msg.reconnection ? 0 : 0.5,
      forceNew: true,
      timeout: 5000,
      // "sourceIp": connect from this local address (nginx's ip_hash routes by it).
      ...(msg.sourceIp
        ? { agent: new http.Agent({ localAddress: msg.sourceIp }), localAddress: msg.sourceIp }
        : {}),
      auth: msg.auth ?? {},
    });
    const current = socket;
    current.onAny((event, ...args) => {
      if (current === socket) send({ event, args });
    });
    current.on("disconnect", (reason) => {
      if (current === socket) send({ event: "$disconnect", args: [reason] });
    });
    if (msg.reconnection) {
      current.on("connect", () => {
        if (current === socket) {
          send({ event: "$connect", args: [{ id: current.id, recovered: current.recovered }] });
        }
      });
    }
    const state = await connection(current, msg.timeout ?? 5000);
    if (state.connected) {
      state.transport = current.io.engine.transport.name;
      state.id = current.id;
    } else {
      current.disconnect();
    }
    return state;
  },
  async call(msg) {
    return await callWithAck(msg.event, msg.args ?? [], msg.ms ?? 5000);
  },
  async emit(msg) {
    socket.emit(msg.event, ...(msg.args ?? []));
    return null;
  },
  async kill() {
    // Abort the connection under the client: the server sees the TCP connection
    // end without an Engine.IO CLOSE, as after a network failure.
    const transport = socket.io.engine.transport;
    if (transport.ws && typeof transport.ws.terminate === "function") {
      transport.ws.terminate();
    } else {
      socket.io.engine.close();
    }
    return transport.name;
  },
  async reconnect(msg) {
    // Optionally elsewhere (another instance) or with other credentials; the
    // Socket object, and so its pid and last offset, stay the same.
    if (msg.url) socket.io.uri = msg.url;
    if (msg.auth) socket.auth = msg.auth;
    socket.connect();
    const state = await connection(socket, msg.timeout ?? 5000);
    return { ...state, id: socket.id, recovered: socket.recovered };
  },
  async state() {
    return { id: socket.id ?? null, connected: socket.connected, recovered: socket.recovered };
  },
  async disconnect() {
    if (socket) socket.disconnect();
    await sleep(50);
    return null;
  },
  async exit() {
    if (socket) socket.disconnect();
    await sleep(100); // let the DISCONNECT packet reach the server
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
    msg = decode(JSON.parse(line));
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
  if (socket) socket.disconnect();
  clearTimeout(hard);
  setTimeout(() => quit(0), 100);
});
send({ ready: true });
