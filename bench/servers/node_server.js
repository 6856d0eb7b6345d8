// Node.js socket.io 4.8.x reference server for the cowrite benchmark.
// Semantics shared by all three servers:
//   "join" (room)          -> enter the room, ack "ok"
//   "msg"  (room, payload) -> broadcast "msg" payload to the room, sender excluded
// Usage: node node_server.js [port] [host]
"use strict";
const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2] || process.env.PORT || 3001);
const host = process.argv[3] || process.env.HOST || "127.0.0.1";

const httpServer = http.createServer();
// Default options apart from CORS (all servers allow any origin) and the
// ping timing, which is spelled out so it matches the Python servers.
const io = new Server(httpServer, {
  cors: { origin: "*" },
  pingInterval: 25000,
  pingTimeout: 20000,
});

io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    socket.join(room);
    if (typeof ack === "function") ack("ok");
  });
  socket.on("msg", (room, payload) => {
    socket.to(room).emit("msg", payload);
  });
});

httpServer.listen(port, host, () => {
  const addr = httpServer.address();
  process.stdout.write(
    JSON.stringify({ server: "node", pid: process.pid, host, port: addr.port, listening: true,
      version: require("socket.io/package.json").version, node: process.version }) + "\n"
  );
});

function shutdown() {
  io.close();
  httpServer.close();
  setTimeout(() => process.exit(0), 200).unref();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
