// One official socket.io-client over the transports given in the config:
// connect, (optionally) wait for the upgrade to WebSocket, text and binary
// events both ways, client->server acks, a server->client ack.
//
// cfg: {url, transports: ["websocket"] | ["polling"] | ["polling", "websocket"],
//       expectUpgrade: bool, auth: object}
import { io } from "socket.io-client";
import { call, connectOrThrow, main, once, sleep } from "./lib.mjs";

main(async (cfg) => {
  const socket = io(cfg.url, {
    transports: cfg.transports,
    upgrade: cfg.expectUpgrade ?? false,
    reconnection: false,
    forceNew: true,
    timeout: 5000,
    auth: cfg.auth ?? {},
  });
  // io() with autoConnect creates the Engine.IO socket synchronously
  const engine = socket.io.engine;
  const result = { firstTransport: engine.transport.name, upgraded: false };
  const upgradeDone = new Promise((resolve) =>
    engine.once("upgrade", () => {
      result.upgraded = true;
      resolve();
    }),
  );
  try {
    await connectOrThrow(socket);
    result.id = socket.id;
    if (cfg.expectUpgrade) {
      await Promise.race([upgradeDone, sleep(5000)]);
      if (!result.upgraded) throw new Error("no upgrade to websocket within 5 s");
    }

    // text event, echoed back by the server as "echo-back"
    let reply = once(socket, "echo-back");
    socket.emit("echo", "hello", { a: 1, b: [true, null, "é"] }, 3.5);
    result.textEcho = await reply;

    // binary attachments, nested, echoed back
    reply = once(socket, "echo-back");
    socket.emit("echo", Buffer.from([1, 2, 3]), {
      nested: Buffer.from([4, 5]),
      list: [Buffer.from([]), Buffer.from([255, 0, 128])],
    });
    result.binaryEcho = await reply;

    // a large binary payload (128 KiB)
    const big = Buffer.alloc(128 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = i % 251;
    reply = once(socket, "echo-back");
    socket.emit("echo", big);
    const [bigBack] = await reply;
    result.bigEchoEqual = Buffer.compare(Buffer.from(bigBack), big) === 0;

    // client -> server acks
    result.sumAck = await call(socket, "sum", 2, 3);
    result.echoAck = await call(socket, "echo-ack", "x", Buffer.from([7, 8]), { k: [1] });

    // server -> client ack: the server emits "callback-please" with a callback,
    // we acknowledge, the server reports what it received as "callback-result"
    socket.on("callback-please", (...args) => {
      const ack = args.pop();
      result.callbackPleaseArgs = args;
      ack("pong", Buffer.from([9, 9]), args.length);
    });
    reply = once(socket, "callback-result");
    socket.emit("request-callback", "hi", Buffer.from([5]));
    result.callbackResult = await reply;

    result.transportAtEnd = socket.io.engine.transport.name;
  } finally {
    socket.disconnect();
    await sleep(150); // let the DISCONNECT packet reach the server before exiting
  }
  return result;
});
