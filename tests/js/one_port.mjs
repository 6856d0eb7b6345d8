// Several apps on one port: the official socket.io-client talks to two
// Socket.IO apps mounted at different paths, and the official engine.io-client
// to an Engine.IO echo app, all on the same host:port.
//
// cfg: {url, transports, sioPaths: [path, ...], eioPath, expectUpgrade}
import { Socket as EngineSocket } from "engine.io-client";
import { io } from "socket.io-client";
import { call, connectOrThrow, main, once, sleep } from "./lib.mjs";

function engineEcho(cfg) {
  return new Promise((resolve, reject) => {
    const socket = new EngineSocket(cfg.url, {
      path: cfg.eioPath,
      transports: cfg.transports,
    });
    const timer = setTimeout(() => {
      socket.close();
      reject(new Error("engine.io echo timed out"));
    }, 5000);
    const result = { messages: [] };
    socket.on("open", () => {
      result.firstTransport = socket.transport.name;
      socket.send("hello engine");
      socket.send(Buffer.from([1, 2, 3]));
    });
    socket.on("upgrade", () => {
      result.upgraded = true;
    });
    socket.on("message", (data) => {
      result.messages.push(typeof data === "string" ? data : Buffer.from(data));
      if (result.messages.length === 2) {
        const finish = () => {
          clearTimeout(timer);
          result.transportAtEnd = socket.transport.name;
          socket.close();
          resolve(result);
        };
        if (cfg.expectUpgrade && !result.upgraded) socket.once("upgrade", finish);
        else finish();
      }
    });
    socket.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

main(async (cfg) => {
  const sockets = cfg.sioPaths.map((path) =>
    io(cfg.url, { path, transports: cfg.transports, reconnection: false, timeout: 5000, forceNew: true }),
  );
  const result = { sio: [], eio: null };
  try {
    await Promise.all(sockets.map((s) => connectOrThrow(s)));
    for (const socket of sockets) {
      if (cfg.expectUpgrade && socket.io.engine.transport.name !== "websocket") {
        await once(socket.io.engine, "upgrade");
      }
      const entry = {};
      entry.whoami = await call(socket, "whoami");
      entry.echoAck = await call(socket, "echo-ack", "x", Buffer.from([7, 8]));
      entry.unknown = await call(socket, "no-such-event", 1);
      entry.transport = socket.io.engine.transport.name;
      result.sio.push(entry);
    }
    result.eio = await engineEcho(cfg);
  } finally {
    for (const s of sockets) s.disconnect();
    await sleep(100);
  }
  return result;
});
