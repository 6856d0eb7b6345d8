// Connects with an explicit Origin header over one transport and reports
// whether the server accepted the connection.
//
// cfg: {url, transport: "polling" | "websocket", origin}
// Polling uses the Fetch transport: Node's XMLHttpRequest shim refuses to set
// an Origin header.
import { Fetch, io, NodeWebSocket } from "socket.io-client";
import { connection, main } from "./lib.mjs";

main(async (cfg) => {
  const socket = io(cfg.url, {
    transports: [cfg.transport === "polling" ? Fetch : NodeWebSocket],
    extraHeaders: { Origin: cfg.origin },
    reconnection: false,
    forceNew: true,
    timeout: 3000,
  });
  try {
    return await connection(socket, 5000);
  } finally {
    socket.disconnect();
  }
});
