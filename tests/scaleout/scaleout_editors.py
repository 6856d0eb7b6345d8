"""Editors for the scale-out tests, on both official clients, each bound to a
source address: ``PyEditor`` (python-socketio ``AsyncClient``, in this
process) and ``NodeEditors`` (socket.io-client, several per Node process,
``tests/js/scaleout_editors.mjs``); and the checks of what they report.

An editor joins one document, sends numbered operations (clientOpId
``<label>-<i>``) with a bounded number in flight, records every operation the
server gives it (join and sync pages, ``remote-edit``) and its own acks, and
after losing its connection reconnects, rejoins with ``since`` (its gap-free
prefix) and resends what was not acknowledged, with the same clientOpId.

Both check the catch-up boundary where packets arrive, in arrival order: from
the ``join-document`` emit until the acknowledgement of the last catch-up page,
a ``remote-edit`` on that connection is recorded as a violation (the server
holds live operations for a member still catching up).  The flag is cleared in
the ack callback itself: python-socketio handles each received packet in its
own task, started in arrival order, so an ack callback and an event handler
run in the order their packets came; the coroutine awaiting ``call`` resumes
only later.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import random
import time
from typing import Any

import aiohttp
import socketio
from scaleout_cluster import JS_DIR, WAIT, token

# -- editors ------------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


class PyEditor:
    """One editor on python-socketio's ``AsyncClient``, bound to ``source_ip``.

    python-socketio 5.18 does not reconnect after the server's Engine.IO CLOSE
    (it sets its state to "disconnecting" before telling the Socket.IO layer),
    so this editor reconnects itself: after ``server-draining`` it waits the
    ``reconnectDelayMs`` the server chose, otherwise a jittered backoff like the
    official clients' (1 s doubling, +-0.5 s, at most 5 s); each time with a new
    client, rejoining with ``since`` and resending its unacknowledged operations
    with the same clientOpId.
    """

    kind = "python"

    def __init__(
        self, label: str, url: str, source_ip: str, transports: list[str], document_id: str
    ) -> None:
        self.label = label
        self.url = url
        self.source_ip = source_ip
        self.transports = transports
        self.doc = document_id
        self.token = token(label, document_id)
        self.http: aiohttp.ClientSession | None = None
        self.sio: socketio.AsyncClient | None = None
        self.view: dict[int, tuple[Any, Any]] = {}
        self.acked: dict[str, int] = {}
        self.unacked: dict[str, Any] = {}
        self.generation: dict[str, int] = {}
        self.conflicts: list[Any] = []
        self.session_duplicates: list[Any] = []
        self.order_violations: list[Any] = []
        self.errors: list[str] = []
        self.ack_errors: list[Any] = []
        self.disconnects: list[str] = []
        self.reconnect_seconds: list[float] = []
        # [backoff, connect, join] seconds of each reconnection
        self.reconnect_parts: list[list[float]] = []
        self.attempt_at: float | None = None
        self.connected_at = 0.0
        self.drain_to_rejoin_seconds: list[float] = []
        self.drains: list[Any] = []
        self.resends = 0
        self.sessions = 0
        self.catching_up = False
        self.join_since = 0
        self.boundary_violations: list[Any] = []
        self.rejoins: list[Any] = []
        self.joined = False
        self.closing = False
        self.disconnected_at: float | None = None
        self.drained_at: float | None = None
        self.drain_delay: float | None = None
        self._session_seen: set[int] = set()
        self._last_remote = 0
        self._reconnector: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        return f"<python editor {self.label} {'+'.join(self.transports)} from {self.source_ip}>"

    # -- the log this client knows ------------------------------------------------

    def add(self, source: str, seq: int, client_op_id: Any, operation: Any) -> None:
        known = self.view.get(seq)
        if known is not None and not _same(known, (client_op_id, operation)):
            self.conflicts.append({"source": source, "seq": seq, "known": known})
            return
        self.view[seq] = (client_op_id, operation)

    def delivered(self, source: str, seq: int, client_op_id: Any, operation: Any) -> None:
        if seq in self._session_seen:
            self.session_duplicates.append({"source": source, "seq": seq, "session": self.sessions})
        self._session_seen.add(seq)
        self.add(source, seq, client_op_id, operation)

    def head(self) -> int:
        n = 0
        while n + 1 in self.view:
            n += 1
        return n

    # -- connection life -------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def connect(self) -> None:
        if self.http is None:
            self.http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(local_addr=(self.source_ip, 0)),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            )
        sio = socketio.AsyncClient(
            reconnection=False,
            handle_sigint=False,
            http_session=self.http,
            # A named logger: its warnings (why a transport ended) show in pytest's report.
            engineio_logger=logging.getLogger(f"scaleout.engineio.{self.label}"),
        )
        sio.on("remote-edit", self._on_remote_edit)
        sio.on("server-draining", self._on_draining)
        sio.on("disconnect", self._on_disconnect)
        sio.on("resync", self._on_resync)
        self.sio = sio
        await asyncio.wait_for(
            sio.connect(
                self.url,
                auth={"token": self.token},
                transports=list(self.transports),
                wait_timeout=5,
            ),
            8.0,
        )
        self.connected_at = time.monotonic()
        self.sessions += 1
        self._session_seen = set()
        self._last_remote = 0
        await self._rejoin(sio)

    async def _call(
        self, sio: socketio.AsyncClient, event: str, payload: Any, *, last_page_clears: bool
    ) -> Any:
        """``sio.call``, but the ack is seen in packet order (see the module
        docstring): with ``last_page_clears``, an ack without ``more`` ends
        the catch-up right there."""
        session = self.sessions
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def on_ack(ack: Any) -> None:
            if (
                last_page_clears
                and session == self.sessions
                and isinstance(ack, dict)
                and ack.get("ok")
                and not ack.get("more")
            ):
                self.catching_up = False
            if not future.done():
                future.set_result(ack)

        await sio.emit(event, payload, callback=on_ack)
        return await asyncio.wait_for(future, 8)

    async def _rejoin(self, sio: socketio.AsyncClient) -> None:
        since = self.head()
        self.join_since = since
        self.catching_up = True
        ack = await self._call(
            sio,
            "join-document",
            {"documentId": self.doc, "since": since},
            last_page_clears=True,
        )
        if not ack.get("ok"):
            raise AssertionError(f"{self!r}: join refused: {ack}")
        self.rejoins.append(
            {"session": self.sessions, "since": since, "ops": len(ack["ops"]), "more": ack["more"]}
        )
        for op in ack["ops"]:
            self.delivered("join", op["seq"], op["clientOpId"], op["operation"])
        if ack["more"]:
            await self._catch_up(sio, ack["ops"][-1]["seq"] if ack["ops"] else since, "join")
        self.joined = True
        if self.disconnected_at is not None:
            now = time.monotonic()
            self.reconnect_seconds.append(now - self.disconnected_at)
            attempt = self.attempt_at if self.attempt_at is not None else self.disconnected_at
            self.reconnect_parts.append(
                [
                    attempt - self.disconnected_at,
                    self.connected_at - attempt,
                    now - self.connected_at,
                ]
            )
            self.attempt_at = None
            if self.drained_at is not None:
                self.drain_to_rejoin_seconds.append(now - self.drained_at)
            self.disconnected_at = self.drained_at = None
        for client_op_id, operation in list(self.unacked.items()):
            self.resends += 1
            await self._emit_edit(client_op_id, operation)

    async def _catch_up(self, sio: socketio.AsyncClient, since: int, source: str) -> None:
        last = since
        for _ in range(1000):
            page = await self._call(
                sio,
                "sync",
                {"documentId": self.doc, "since": last, "limit": 100},
                last_page_clears=source == "join",
            )
            if not page.get("ok"):
                raise AssertionError(f"{self!r}: sync refused: {page}")
            for op in page["ops"]:
                self.delivered(source, op["seq"], op["clientOpId"], op["operation"])
            if page["ops"]:
                last = page["ops"][-1]["seq"]
            if not page["more"]:
                return
        raise AssertionError("sync never ended")

    async def _on_remote_edit(self, e: dict[str, Any]) -> None:
        if e.get("documentId") != self.doc:
            return
        if self.catching_up:
            self.boundary_violations.append(
                {"seq": e["seq"], "since": self.join_since, "session": self.sessions}
            )
        if e["seq"] <= self._last_remote:
            self.order_violations.append({"after": self._last_remote, "got": e["seq"]})
        self._last_remote = e["seq"]
        self.delivered("remote-edit", e["seq"], e["clientOpId"], e["operation"])

    async def _on_draining(self, data: dict[str, Any]) -> None:
        self.drains.append(data)
        self.drained_at = time.monotonic()
        self.drain_delay = float(data.get("reconnectDelayMs", 0)) / 1000

    async def _on_resync(self, data: dict[str, Any]) -> None:
        if self.sio is not None:
            self._spawn(self._catch_up(self.sio, int(data["since"]), "sync"))

    async def _on_disconnect(self, reason: Any = None) -> None:
        self.joined = False
        self.catching_up = False
        self.disconnected_at = time.monotonic()
        self.disconnects.append(str(reason))
        if not self.closing and (self._reconnector is None or self._reconnector.done()):
            self._reconnector = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = self.drain_delay
        backoff = 1.0
        for _attempt in range(10):
            if delay is None:
                delay = backoff + 0.5 * (2 * random.random() - 1)
                backoff = min(backoff * 2, 5.0)
            await asyncio.sleep(delay)
            delay = None
            if self.closing:
                return
            self.attempt_at = time.monotonic()
            old, self.sio = self.sio, None
            if old is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(old.disconnect(), 2.0)
            try:
                await self.connect()
                self.drain_delay = None
                return
            except Exception as exc:  # any failure: try again after the backoff
                self.errors.append(f"reconnect: {type(exc).__name__}: {exc}")
        self.errors.append("gave up reconnecting")

    # -- editing ---------------------------------------------------------------------

    async def _emit_edit(self, client_op_id: str, operation: Any) -> None:
        sio = self.sio
        if sio is None or not self.joined:
            return
        generation = self.generation.get(client_op_id, 0) + 1
        self.generation[client_op_id] = generation

        def on_ack(ack: dict[str, Any]) -> None:
            if self.generation.get(client_op_id) != generation or client_op_id not in self.unacked:
                return
            if not ack.get("ok"):
                self.ack_errors.append({"clientOpId": client_op_id, "error": ack.get("error")})
                if ack.get("error", {}).get("code") in ("not_joined", "unavailable"):
                    self._spawn(self._retry(client_op_id, operation))
                return
            before = self.acked.get(client_op_id)
            if before is not None and before != ack["seq"]:
                self.conflicts.append({"source": "ack", "clientOpId": client_op_id})
            self.acked[client_op_id] = ack["seq"]
            del self.unacked[client_op_id]
            self.add("ack", ack["seq"], client_op_id, operation)

        payload = {"documentId": self.doc, "operation": operation, "clientOpId": client_op_id}
        # Disconnected meanwhile: it is resent after the rejoin.
        with contextlib.suppress(socketio.exceptions.SocketIOError):
            await sio.emit("edit-operation", payload, callback=on_ack)

    async def _retry(self, client_op_id: str, operation: Any) -> None:
        await asyncio.sleep(0.1)
        if self.joined and client_op_id in self.unacked:
            await self._emit_edit(client_op_id, operation)

    async def edit(self, count: int, interval: float, window: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for i in range(count):
            while len(self.unacked) >= window:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self!r}: window full at op {i}")
                await asyncio.sleep(0.01)
            client_op_id = f"{self.label}-{i}"
            operation = {"by": self.label, "i": i, "t": time.time()}
            self.unacked[client_op_id] = operation
            await self._emit_edit(client_op_id, operation)
            await asyncio.sleep(interval)
        while self.unacked:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self!r}: {len(self.unacked)} unacknowledged (joined={self.joined}, "
                    f"errors={self.errors[-3:]})"
                )
            await asyncio.sleep(0.01)

    async def wait_head(self, head: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.head() < head:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self!r}: head {self.head()} < {head}")
            await asyncio.sleep(0.01)

    async def report(self) -> dict[str, Any]:
        assert self.sio is not None
        final: list[list[Any]] = []
        since = 0
        for _ in range(1000):
            page = await self.sio.call(
                "sync", {"documentId": self.doc, "since": since, "limit": 100}, timeout=8
            )
            assert page.get("ok"), page
            final.extend([op["seq"], op["clientOpId"], op["operation"]] for op in page["ops"])
            if page["ops"]:
                since = page["ops"][-1]["seq"]
            if not page["more"]:
                break
        # Copies: the editor goes on recording (its own disconnect at close).
        return copy.deepcopy(
            {
                "label": self.label,
                "kind": self.kind,
                "transports": self.transports,
                "sourceIp": self.source_ip,
                "view": [[s, c, o] for s, (c, o) in sorted(self.view.items())],
                "acked": self.acked,
                "unacked": list(self.unacked),
                "conflicts": self.conflicts,
                "sessionDuplicates": self.session_duplicates,
                "orderViolations": self.order_violations,
                "errors": self.errors,
                "ackErrors": self.ack_errors,
                "disconnects": self.disconnects,
                "reconnectSeconds": self.reconnect_seconds,
                "reconnectParts": self.reconnect_parts,
                "drainToRejoinSeconds": self.drain_to_rejoin_seconds,
                "drains": self.drains,
                "resends": self.resends,
                "sessions": self.sessions,
                "boundaryViolations": self.boundary_violations,
                "rejoins": self.rejoins,
                "finalLog": final,
            }
        )

    async def close(self) -> None:
        self.closing = True
        if self._reconnector is not None:
            self._reconnector.cancel()
            with contextlib.suppress(BaseException):
                await self._reconnector
        for task in list(self._tasks):
            task.cancel()
        if self.sio is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.sio.disconnect(), 3.0)
        if self.http is not None:
            await self.http.close()


class NodeEditors:
    """Editors on the official socket.io-client in one Node process
    (``tests/js/scaleout_editors.mjs``), driven with JSON lines."""

    def __init__(self, url: str, document_id: str, specs: list[dict[str, Any]]) -> None:
        self.url = url
        self.doc = document_id
        self.specs = [{**s, "token": token(s["label"], document_id)} for s in specs]
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next = 0
        self._ready = asyncio.Event()
        self.fatal: list[str] = []
        self.stderr = b""

    async def start(self) -> NodeEditors:
        config = {"url": self.url, "documentId": self.doc, "hardTimeout": 110_000}
        self.proc = await asyncio.create_subprocess_exec(
            "node", str(JS_DIR / "scaleout_editors.mjs"),
            json.dumps({**config, "editors": self.specs}),
            cwd=JS_DIR, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, limit=64 * 1024 * 1024,
        )  # fmt: skip
        self._reader = asyncio.get_running_loop().create_task(self._read())
        try:
            await asyncio.wait_for(self._ready.wait(), WAIT)
        except TimeoutError:
            raise AssertionError("the Node editors did not start") from None
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            msg = json.loads(line)
            if "ready" in msg:
                self._ready.set()
            elif "fatal" in msg:
                self.fatal.append(msg["fatal"])
            elif "id" in msg:
                future = self._pending.pop(msg["id"], None)
                if future is not None and not future.done():
                    if msg["ok"]:
                        future.set_result(msg["result"])
                    else:
                        future.set_exception(AssertionError(f"node editors: {msg['error']}"))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(AssertionError(f"node editors exited: {self.fatal}"))

    async def command(self, cmd: str, timeout: float, **fields: Any) -> Any:
        assert self.proc is not None and self.proc.stdin is not None
        self._next += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[self._next] = future
        self.proc.stdin.write(
            (json.dumps({"id": self._next, "cmd": cmd, **fields}) + "\n").encode()
        )
        await self.proc.stdin.drain()
        return await asyncio.wait_for(future, timeout)

    async def connect(self) -> None:
        await self.command("connect", WAIT + 2, ms=int(WAIT * 1000))

    async def edit(
        self,
        count: int,
        interval: float,
        window: int,
        timeout: float,
        labels: list[str] | None = None,
    ) -> None:
        """Every editor (or those in ``labels``) sends ``count`` operations."""
        await self.command(
            "edit",
            timeout + 2,
            count=count,
            intervalMs=int(interval * 1000),
            window=window,
            ms=int(timeout * 1000),
            labels=labels,
        )

    async def hops(
        self, labels: list[str], addresses: list[str], rounds: int, lag_max: int, timeout: float
    ) -> int:
        """Each of ``labels`` leaves its connection and rejoins ``rounds`` times,
        from the next of ``addresses`` each time; the number of rejoins done."""
        result: dict[str, int] = await self.command(
            "hops",
            timeout + 2,
            labels=labels,
            addresses=addresses,
            rounds=rounds,
            lagMax=lag_max,
            ms=int(timeout * 1000),
        )
        return result["rounds"]

    async def wait_head(self, head: int, timeout: float) -> None:
        await self.command("waitHead", timeout + 2, head=head, ms=int(timeout * 1000))

    async def reports(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.command("report", 30.0)
        return result

    async def close(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.command("exit", 3.0)
            with contextlib.suppress(Exception):
                assert proc.stdin is not None
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 3.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._reader, 3.0)
        if proc.stderr is not None:
            with contextlib.suppress(Exception):
                self.stderr = await asyncio.wait_for(proc.stderr.read(), 1.0)


def around_one_instance(
    subnets: dict[str, list[str]],
    target: str,
    prefix: str,
    *,
    node: int,
    python: int,
    others: tuple[list[str], list[str]],
) -> tuple[list[dict[str, Any]], list[tuple[str, str, list[str]]]]:
    """Editor specs for a test about one instance: on ``target``'s first /24,
    ``node`` Node editors (``<prefix>n<k>``) and ``python`` Python editors
    (``<prefix>p<k>``), WebSocket and long-polling in turn; on every other
    instance that has addresses, one Node (``<instance>n``) and one Python
    (``<instance>p``) editor with the transports in ``others``.  Returns
    (Node specs, Python (label, address, transports))."""
    net = subnets[target][0]
    turn = (["websocket"], ["polling"])
    node_specs: list[dict[str, Any]] = [
        {"label": f"{prefix}n{k}", "sourceIp": f"{net}.{10 + k}", "transports": turn[k % 2]}
        for k in range(node)
    ]
    py_specs = [(f"{prefix}p{k}", f"{net}.{40 + k}", turn[k % 2]) for k in range(python)]
    for inst, nets in subnets.items():
        if inst != target and nets:
            node_specs.append(
                {"label": f"{inst}n", "sourceIp": f"{nets[0]}.10", "transports": others[0]}
            )
            py_specs.append((f"{inst}p", f"{nets[0]}.20", others[1]))
    return node_specs, py_specs


# -- checks -------------------------------------------------------------------------


def check_reports(
    reports: list[dict[str, Any]], expected_ids: set[str], *, allow_reconnects: bool
) -> list[list[Any]]:
    """Every editor ends with the stored log: seqs 1..N without gaps, each
    clientOpId once, every acknowledged (clientOpId, seq) in it; the log each
    editor built from received operations and acks equals it.  Returns the log."""
    assert reports, "no editor reported"
    log = reports[0]["finalLog"]
    n = len(expected_ids)
    seqs = [entry[0] for entry in log]
    assert seqs == list(range(1, n + 1)), f"stored log seqs are not 1..{n}: {seqs[:10]}..."
    ids = [entry[1] for entry in log]
    assert len(set(ids)) == len(ids), "a clientOpId is stored more than once"
    assert set(ids) == expected_ids, (
        f"stored ids differ: missing {sorted(expected_ids - set(ids))[:10]}, "
        f"unexpected {sorted(set(ids) - expected_ids)[:10]}"
    )
    by_id = {entry[1]: entry[0] for entry in log}
    for r in reports:
        who = f"{r['kind']} {r['label']} ({'+'.join(r['transports'])})"
        assert r["finalLog"] == log, f"{who}: final sync differs from {reports[0]['label']}'s"
        assert not r["boundaryViolations"], (
            f"{who}: remote-edit before its catch-up ended: {r['boundaryViolations'][:5]}"
        )
        assert not r["conflicts"], f"{who}: conflicting entries: {r['conflicts'][:5]}"
        assert not r["sessionDuplicates"], f"{who}: delivered twice: {r['sessionDuplicates'][:5]}"
        assert not r["orderViolations"], f"{who}: out of order: {r['orderViolations'][:5]}"
        assert not r["unacked"], f"{who}: never acknowledged: {r['unacked'][:5]}"
        for client_op_id, seq in r["acked"].items():
            assert by_id.get(client_op_id) == seq, (
                f"{who}: acknowledged {client_op_id} as seq {seq}, stored as "
                f"{by_id.get(client_op_id)}"
            )
        assert r["view"] == log, f"{who}: the log it received differs from the stored one"
        if not allow_reconnects:
            assert r["sessions"] == 1 and not r["disconnects"], f"{who}: {r['disconnects']}"
            assert not r["errors"], f"{who}: {r['errors'][:5]}"
    return log


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]
