// Helpers shared by the scenario scripts that the Python integration tests spawn.
//
// Protocol between pytest and a script: the scenario configuration is one JSON
// argument (argv[2]); the script prints exactly one JSON line on stdout,
// {"ok": true, "result": ...} or {"ok": false, "error": "..."}, and exits.
// Binary values are written as {"$bin": "<base64>"} in both directions.
// Every wait has a timeout, and the whole script has a hard deadline.

export function encode(value) {
  if (Buffer.isBuffer(value)) return { $bin: value.toString("base64") };
  if (value instanceof ArrayBuffer) return { $bin: Buffer.from(value).toString("base64") };
  if (ArrayBuffer.isView(value)) {
    return { $bin: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("base64") };
  }
  if (Array.isArray(value)) return value.map(encode);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, encode(v)]));
  }
  return value;
}

export function decode(value) {
  if (Array.isArray(value)) return value.map(decode);
  if (value !== null && typeof value === "object") {
    if (Object.keys(value).length === 1 && typeof value.$bin === "string") {
      return Buffer.from(value.$bin, "base64");
    }
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, decode(v)]));
  }
  return value;
}

// Resolves with the event's arguments (an array); rejects after `ms`.
export function once(emitter, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const handler = (...args) => {
      clearTimeout(timer);
      resolve(args);
    };
    const timer = setTimeout(() => {
      emitter.off(event, handler);
      reject(new Error(`timed out after ${ms} ms waiting for "${event}"`));
    }, ms);
    emitter.once(event, handler);
  });
}

// Waits for "connect"; resolves {connected: true} or {connected: false, error}.
export function connection(socket, ms = 5000) {
  return new Promise((resolve) => {
    const done = (value) => {
      clearTimeout(timer);
      socket.off("connect", onConnect);
      socket.off("connect_error", onError);
      resolve(value);
    };
    const onConnect = () => done({ connected: true });
    const onError = (err) =>
      done({ connected: false, error: err.message, data: err.data ?? null });
    const timer = setTimeout(() => done({ connected: false, error: "timeout" }), ms);
    socket.on("connect", onConnect);
    socket.on("connect_error", onError);
  });
}

export async function connectOrThrow(socket, ms = 5000) {
  const state = await connection(socket, ms);
  if (!state.connected) throw new Error(`connect failed: ${state.error}`);
  return socket;
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Client -> server event with an acknowledgement; resolves with all ack args.
export function call(socket, event, ...args) {
  return new Promise((resolve, reject) => {
    socket.timeout(5000).emit(event, ...args, (err, ...ackArgs) => {
      if (err) reject(new Error(`no ack for "${event}": ${err.message}`));
      else resolve(ackArgs);
    });
  });
}

function print(obj, code) {
  process.stdout.write(JSON.stringify(obj) + "\n", () => process.exit(code));
}

export async function main(scenario) {
  const cfg = decode(JSON.parse(process.argv[2] ?? "{}"));
  const hard = setTimeout(() => print({ ok: false, error: "hard timeout" }, 3), cfg.hardTimeout ?? 20000);
  try {
    const result = await scenario(cfg);
    clearTimeout(hard);
    print({ ok: true, result: encode(result) }, 0);
  } catch (err) {
    clearTimeout(hard);
    print({ ok: false, error: String((err && err.stack) || err) }, 1);
  }
}
