// ADR-003's Node.js design, as the ADR writes it, as the reference for the
// collaboration scenario (issue 9): socket.io 4.8 with the ADR's options, a
// JWT middleware (HS256, jsonwebtoken), `join-document` with a permission
// check, `user-joined` to the room, `edit-operation` ->
// `socket.to(room).emit('remote-edit')` and a fire-and-forget INSERT per
// edit through a `pg` Pool. The ADR's handlers are extended only where the
// issue asks: both take an acknowledgement callback (join: after joining;
// edit: right after the emit, i.e. before the INSERT completes, as the
// ADR's "persist (async)" means).
//
// What the ADR leaves abstract, and how it is filled in here:
//   verifyJWT(token)     jsonwebtoken.verify, algorithms ["HS256"], secret from
//                        $JWT_SECRET; user = { id: sub, name: name || sub }.
//   checkPermission(u,d) --store postgres: SELECT 1 FROM permissions WHERE
//                        document_id = $1 AND user_id = $2 (primary-key lookup);
//                        --store none: an in-memory Map document -> Set(user),
//                        loaded from --permissions FILE (lines "doc<TAB>user").
//   persistOperation     INSERT INTO operations (document_id, user_id, operation)
//                        VALUES ($1, $2, $3) (operation as jsonb), pg Pool with
//                        its defaults (max 10 connections). --store none: no-op.
// The schema is servers/node_adr_schema.sql; bench/run.py creates a fresh
// database, applies it and fills `permissions` before starting this server.
//
// Usage: JWT_SECRET=... node node_adr_server.js --port 3101 [--host 127.0.0.1]
//          [--store none|postgres] [--pg postgresql://127.0.0.1/DB] [--permissions FILE]
// Prints one JSON line with "listening": true when ready; on SIGUSR1 prints
// {"pg": {...}} (INSERTs issued/completed/failed/in flight); exits on SIGTERM.
"use strict";
const fs = require("fs");
const http = require("http");
const { Server } = require("socket.io");
const jwt = require("jsonwebtoken");

function arg(name, dflt) {
  const i = process.argv.indexOf("--" + name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}
const port = Number(arg("port", process.env.PORT || 3001));
const host = arg("host", process.env.HOST || "127.0.0.1");
const store = arg("store", "none");
const pgUrl = arg("pg", process.env.DATABASE_URL || "postgresql://127.0.0.1/test");
const permissionsFile = arg("permissions", "");
const SECRET = process.env.JWT_SECRET;
if (!SECRET) {
  process.stderr.write("JWT_SECRET is required\n");
  process.exit(2);
}
if (store !== "none" && store !== "postgres") {
  process.stderr.write("--store must be none or postgres\n");
  process.exit(2);
}

// ---------------------------------------------------------------- store
let pool = null;
const pgStats = { issued: 0, completed: 0, failed: 0, lastError: null };
const memPermissions = new Map(); // documentId -> Set(userId), for --store none

if (store === "postgres") {
  const { Pool } = require("pg");
  // Like libpq, default the role to the OS user when neither the URL nor the
  // environment names one (pg falls back to $USER, which may be unset).
  if (!process.env.PGUSER && !process.env.USER) process.env.PGUSER = require("os").userInfo().username;
  pool = new Pool({ connectionString: pgUrl });
  pool.on("error", (err) => console.error("pg pool error:", err.message));
} else if (permissionsFile) {
  for (const line of fs.readFileSync(permissionsFile, "utf8").split("\n")) {
    if (!line) continue;
    const [doc, user] = line.split("\t");
    let users = memPermissions.get(doc);
    if (!users) memPermissions.set(doc, (users = new Set()));
    users.add(user);
  }
}

function verifyJWT(token) {
  return new Promise((resolve, reject) => {
    jwt.verify(token, SECRET, { algorithms: ["HS256"] }, (err, payload) => {
      if (err) return reject(err);
      if (!payload || typeof payload.sub !== "string") return reject(new Error("no sub"));
      resolve({ id: payload.sub, name: typeof payload.name === "string" ? payload.name : payload.sub });
    });
  });
}

async function checkPermission(userId, documentId) {
  if (pool) {
    const r = await pool.query(
      "SELECT 1 FROM permissions WHERE document_id = $1 AND user_id = $2",
      [documentId, userId]
    );
    return r.rowCount > 0;
  }
  const users = memPermissions.get(documentId);
  return users !== undefined && users.has(userId);
}

async function persistOperation(documentId, userId, operation) {
  if (!pool) return;
  pgStats.issued++;
  try {
    await pool.query(
      "INSERT INTO operations (document_id, user_id, operation) VALUES ($1, $2, $3)",
      [documentId, userId, JSON.stringify(operation === undefined ? null : operation)]
    );
    pgStats.completed++;
  } catch (err) {
    pgStats.failed++;
    throw err;
  }
}

// ---------------------------------------------------------------- socket.io (ADR-003)
const httpServer = http.createServer();
const io = new Server(httpServer, {
  cors: {
    origin: process.env.ALLOWED_ORIGINS || "*",
    credentials: true,
  },
  transports: ["websocket", "polling"], // Fallback to polling
  pingTimeout: 30000,
  pingInterval: 25000,
});

// Authentication middleware
io.use(async (socket, next) => {
  const token = socket.handshake.auth && socket.handshake.auth.token;
  try {
    const user = await verifyJWT(token);
    socket.user = user;
    next();
  } catch (err) {
    next(new Error("Authentication failed"));
  }
});

const reply = (ack, value) => {
  if (typeof ack === "function") ack(value);
};

// Document room handling
io.on("connection", (socket) => {
  socket.on("join-document", async (documentId, ack) => {
    // Not in the ADR: with no argument at all, socket.io passes the ack first.
    if (typeof documentId === "function") [documentId, ack] = [undefined, documentId];
    try {
      // Verify user has access to document
      const hasAccess = await checkPermission(socket.user.id, documentId);
      if (!hasAccess) {
        reply(ack, { ok: false, error: { code: "access_denied", message: "Access denied" } });
        return socket.emit("error", "Access denied");
      }

      // Join room for this document
      socket.join(`doc:${documentId}`);
      reply(ack, { ok: true, documentId });

      // Broadcast presence
      io.to(`doc:${documentId}`).emit("user-joined", {
        userId: socket.user.id,
        name: socket.user.name,
      });
    } catch (err) {
      // Not in the ADR: a failed permission query must not become an
      // unhandled rejection (which ends a Node.js process).
      console.error("join-document failed:", err.message);
      reply(ack, { ok: false, error: { code: "unavailable", message: "Permission check failed" } });
    }
  });

  socket.on("edit-operation", async (data, ack) => {
    if (typeof data === "function") [data, ack] = [undefined, data];
    // Not in the ADR: `const { documentId, operation } = data` throws on a
    // null/non-object payload; bad input must not crash the process.
    if (data === null || typeof data !== "object") {
      reply(ack, { ok: false, error: { code: "invalid_payload", message: "Expected an object" } });
      return;
    }
    const { documentId, operation } = data;

    // Broadcast to all users in document room (except sender)
    socket.to(`doc:${documentId}`).emit("remote-edit", {
      userId: socket.user.id,
      operation,
    });
    reply(ack, { ok: true });

    // Persist operation (async)
    persistOperation(documentId, socket.user.id, operation).catch((err) => {
      pgStats.lastError = err.message;
      console.error("Failed to persist operation:", err.message);
    });
  });
});

// ---------------------------------------------------------------- lifecycle
async function main() {
  if (pool) await pool.query("SELECT 1 FROM permissions LIMIT 1"); // schema present, DB reachable
  httpServer.listen(port, host, () => {
    const addr = httpServer.address();
    process.stdout.write(
      JSON.stringify({
        server: "nodeadr", pid: process.pid, host, port: addr.port, listening: true, store,
        version: require("socket.io/package.json").version, node: process.version,
      }) + "\n"
    );
  });
}

process.on("SIGUSR1", () => {
  const inFlight = pgStats.issued - pgStats.completed - pgStats.failed;
  const waiting = pool ? pool.waitingCount : 0;
  process.stdout.write(JSON.stringify({ pg: { ...pgStats, inFlight, waiting } }) + "\n");
});

let stopping = false;
function shutdown() {
  if (stopping) return;
  stopping = true;
  io.close();
  httpServer.close();
  const done = () => process.exit(0);
  if (pool) pool.end().then(done, done);
  setTimeout(done, 2000).unref();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
main().catch((err) => {
  process.stderr.write("start-up failed: " + err.message + "\n");
  process.exit(1);
});
