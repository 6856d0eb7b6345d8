"""Functional check of the ADR-003 reference server (servers/node_adr_server.js)
with the official python-socketio client, on both stores.

Checks: a missing or forged token is refused at CONNECT ("Authentication
failed"); a join without a permission is refused (error ack + "error" event);
a permitted join is acknowledged and announced with user-joined; an edit is
acknowledged, reaches the other member as remote-edit and not the sender;
with --store postgres the edit lands in the operations table (fire-and-forget,
so polled for), and a null edit payload gets an error ack, not a crash.

Usage (from the repository root, after bench/run.sh installed bench/node_modules):
  .venv/bin/python bench/check_node_adr.py [--pg-admin postgresql://127.0.0.1/test]
Exits 0 when every check passed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import socketio

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import collab  # noqa: E402

SECRET = "check-secret-0123456789abcdef0123456789abcdef"


def token(sub: str, secret: str = SECRET) -> str:
    def enc(o: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(o).encode()).rstrip(b"=").decode()

    now = int(time.time())
    body = enc({"alg": "HS256", "typ": "JWT"}) + "." + enc({"sub": sub, "exp": now + 600})
    sig = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
    return body + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def client(url: str, tok: str | None, events: list[tuple[str, Any]]) -> socketio.AsyncClient:
    c = socketio.AsyncClient(reconnection=False)
    for ev in ("user-joined", "remote-edit", "error", "connect_error"):
        c.on(ev, lambda data, ev=ev: events.append((ev, data)))
    await c.connect(url, auth={"token": tok} if tok else None, transports=["websocket"])
    return c


async def checks(url: str, pg_url: str | None) -> list[str]:
    failures: list[str] = []

    def check(cond: bool, what: str) -> None:
        print(("ok   " if cond else "FAIL ") + what)
        if not cond:
            failures.append(what)

    for tok, what in ((None, "no token"), (token("u-a", "x" * 40), "forged token")):
        refused: list[tuple[str, Any]] = []
        try:
            c = await client(url, tok, refused)
            await c.disconnect()
            check(False, f"{what} refused at CONNECT")
        except socketio.exceptions.ConnectionError:
            msg = [d for e, d in refused if e == "connect_error"]
            check(
                bool(msg) and "Authentication failed" in str(msg[0]),
                f"{what} refused at CONNECT: {msg}",
            )
    ea: list[tuple[str, Any]] = []
    eb: list[tuple[str, Any]] = []
    a = await client(url, token("u-doc-0"), ea)
    b = await client(url, token("u-doc-1"), eb)
    denied = await a.call("join-document", "doc-1", timeout=5)
    await asyncio.sleep(0.2)
    check(
        denied.get("ok") is False and ("error", "Access denied") in ea,
        f"join without permission refused: {denied}",
    )
    ja = await a.call("join-document", "doc-0", timeout=5)
    jb = await b.call("join-document", "doc-0", timeout=5)
    check(ja == {"ok": True, "documentId": "doc-0"} and jb.get("ok") is True, "joins acked")
    await asyncio.sleep(0.2)
    check(any(e == "user-joined" and d["userId"] == "u-doc-1" for e, d in ea), "user-joined")
    op = {"type": "insert", "pos": 1, "text": "hi", "t": 1.5}
    ack = await a.call("edit-operation", {"documentId": "doc-0", "operation": op}, timeout=5)
    await asyncio.sleep(0.3)
    check(ack == {"ok": True}, f"edit acked: {ack}")
    got = [d for e, d in eb if e == "remote-edit"]
    check(got == [{"userId": "u-doc-0", "operation": op}], f"remote-edit to the other: {got}")
    check(not any(e == "remote-edit" for e, _ in ea), "no remote-edit to the sender")
    bad = await a.call("edit-operation", (None,), timeout=5)
    check(bad.get("ok") is False, f"null edit payload: error ack {bad}")
    bad = await a.call("edit-operation", timeout=5)
    check(bad.get("ok") is False, f"edit without payload: error ack {bad}")
    if pg_url:
        import asyncpg

        conn = await asyncpg.connect(pg_url)
        try:
            rows: list[Any] = []
            for _ in range(50):
                rows = await conn.fetch("SELECT document_id, user_id, operation FROM operations")
                if rows:
                    break
                await asyncio.sleep(0.1)
            check(
                len(rows) == 1
                and rows[0]["document_id"] == "doc-0"
                and json.loads(rows[0]["operation"]) == op,
                f"INSERT stored the edit: {[dict(r) for r in rows]}",
            )
        finally:
            await conn.close()
    await a.disconnect()
    await b.disconnect()
    return failures


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--pg-admin", default="postgresql://127.0.0.1/test")
    a = p.parse_args()
    failures: list[str] = []
    pairs = [("doc-0", "u-doc-0"), ("doc-0", "u-doc-1")]  # u-doc-0 has no grant on doc-1
    for store in ("none", "postgres"):
        print(f"--- store {store}")
        port = free_port()
        cmd = ["node", "servers/node_adr_server.js", "--port", str(port), "--store", store]
        cleanup = []
        pg_url = None
        if store == "none":
            perms = BENCH / "results" / f"check-perms-{os.getpid()}.tsv"
            perms.parent.mkdir(exist_ok=True)
            perms.write_text("".join(f"{d}\t{u}\n" for d, u in pairs))
            cleanup.append(lambda perms=perms: perms.unlink())
            cmd += ["--permissions", str(perms)]
        else:
            name = collab.new_dbname(f"check{os.getpid()}")
            collab.create_db(a.pg_admin, name)
            cleanup.append(lambda name=name: collab.drop_db(a.pg_admin, name))
            pg_url = collab.db_url(a.pg_admin, name)
            collab.seed_nodeadr_pg(pg_url, pairs)
            cmd += ["--pg", pg_url]
        env = {**os.environ, "JWT_SECRET": SECRET}
        proc = subprocess.Popen(cmd, cwd=BENCH, env=env, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if '"listening":true' not in line:
                failures.append(f"store {store}: server did not start: {line!r}")
                continue
            failures += asyncio.run(checks(f"http://127.0.0.1:{port}", pg_url))
            if proc.poll() is not None:
                failures.append(f"store {store}: server exited")
        finally:
            proc.terminate()
            proc.wait(10)
            for fn in cleanup:
                fn()
    print("all checks passed" if not failures else f"{len(failures)} FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
