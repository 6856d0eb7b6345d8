// Three clients (separate connections); A and B join room "r1".
// A emits to the room, to the room except itself, to C alone; B leaves; C emits
// to the room.  Every client reports what it received.
//
// cfg: {url, transports}
import { io } from "socket.io-client";
import { call, connectOrThrow, main, sleep } from "./lib.mjs";

main(async (cfg) => {
  const opts = { transports: cfg.transports, reconnection: false, forceNew: true, timeout: 5000 };
  const clients = { a: io(cfg.url, opts), b: io(cfg.url, opts), c: io(cfg.url, opts) };
  const received = { a: [], b: [], c: [] };
  try {
    for (const [name, socket] of Object.entries(clients)) {
      socket.on("room-msg", (payload) => received[name].push(["room-msg", payload]));
      socket.on("direct-msg", (payload) => received[name].push(["direct-msg", payload]));
    }
    await Promise.all(Object.values(clients).map((s) => connectOrThrow(s)));
    const { a, b, c } = clients;
    await call(a, "join", "r1");
    await call(b, "join", "r1");

    await call(a, "to-room", "r1", "m1"); // a, b
    await call(a, "to-room-except-me", "r1", "m2"); // b
    await call(a, "to-sid", c.id, "m3"); // c
    await call(b, "leave", "r1");
    await call(c, "to-room", "r1", "m4"); // a (c is not a member, b left)
    await sleep(300); // let stray deliveries (there should be none) arrive
  } finally {
    for (const s of Object.values(clients)) s.disconnect();
    await sleep(150);
  }
  return received;
});
