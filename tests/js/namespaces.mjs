// Two namespaces multiplexed over one connection ("/" and "/chat", the latter
// checking the auth token), plus refused namespace connections.
//
// cfg: {url, transports}
import { io, Manager } from "socket.io-client";
import { call, connection, connectOrThrow, main, sleep } from "./lib.mjs";

main(async (cfg) => {
  const opts = { transports: cfg.transports, reconnection: false, timeout: 5000 };
  const manager = new Manager(cfg.url, { ...opts, autoConnect: true });
  const root = manager.socket("/");
  const chat = manager.socket("/chat", { auth: { token: "secret" } });
  const result = {};
  const others = [];
  try {
    await Promise.all([connectOrThrow(root), connectOrThrow(chat)]);
    result.sameManager = root.io === chat.io;
    result.ids = [root.id, chat.id];
    result.mainWhoami = await call(root, "whoami");
    result.chatWhoami = await call(chat, "whoami");
    result.chatSum = await call(chat, "sum", 20, 22);

    // wrong token: the connect handler of /chat refuses
    const bad = io(`${cfg.url}/chat`, { ...opts, forceNew: true, auth: { token: "nope" } });
    others.push(bad);
    result.badToken = await connection(bad);

    // a namespace without handlers does not exist
    const unknown = io(`${cfg.url}/nowhere`, { ...opts, forceNew: true });
    others.push(unknown);
    result.unknownNamespace = await connection(unknown);

    // leaving /chat keeps "/" usable on the same connection
    chat.disconnect();
    await sleep(100);
    result.mainAfterChatLeft = await call(root, "sum", 1, 1);
    result.mainStillConnected = root.connected;
  } finally {
    for (const s of [root, chat, ...others]) s.disconnect();
    await sleep(150);
  }
  return result;
});
