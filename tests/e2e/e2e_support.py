"""The pieces the end-to-end tests share: the official clients behind one interface,
an in-process cowrite application over a real store, and the operation-log checks.

Two client implementations with the same methods, so a scenario reads the same
whichever client plays a part:

* ``PyClient``: python-socketio's ``AsyncClient`` (5.18.1);
* ``NodeClient``: the official ``socket.io-client`` (4.8.4), run by
  ``tests/js/collab_driver.mjs`` in a Node.js subprocess and driven with JSON
  lines over its stdin/stdout.

Every client records the events the server sends it, in arrival order; every
wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import socketio

from pg_support import PG_DSN

JS_DIR = Path(__file__).resolve().parent.parent / "js"
SECRET = "e2e-test-secret-" + "x" * 32  # HS256 needs at least 32 bytes
#: Bound, in seconds, of one wait for the server.
WAIT = 5.0


class ClientFailure(AssertionError):
    """A client command failed (no ack, Node error, ...)."""


@dataclass
class Connected:
    """The outcome of ``connect``: ``connected``, or the CONNECT_ERROR's message and data."""

    connected: bool
    message: str | None = None
    data: Any = None
    transport: str | None = None


def decode_bin(value: Any) -> Any:
    """Undo tests/js/lib.mjs's ``{"$bin": base64}`` encoding."""
    if isinstance(value, list):
        return [decode_bin(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"$bin"} and isinstance(value["$bin"], str):
            return base64.b64decode(value["$bin"])
        return {k: decode_bin(v) for k, v in value.items()}
    return value


def encode_bin(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bin": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, list | tuple):
        return [encode_bin(v) for v in value]
    if isinstance(value, dict):
        return {k: encode_bin(v) for k, v in value.items()}
    return value


class Client:
    """What a test does with one official client (one connection at a time)."""

    kind = "?"

    def __init__(self, label: str, transports: list[str]) -> None:
        self.label = label
        self.transports = transports
        #: ``(event, args)`` in arrival order; ``$disconnect`` marks a disconnection.
        self.events: list[tuple[str, list[Any]]] = []
        self._changed = asyncio.Event()

    def __repr__(self) -> str:
        return f"<{self.kind} client {self.label} {'+'.join(self.transports)}>"

    # -- recording -------------------------------------------------------------

    def record(self, event: str, args: list[Any]) -> None:
        self.events.append((event, args))
        self._changed.set()

    def of(self, event: str) -> list[Any]:
        """The first argument of every ``event`` received so far."""
        return [args[0] if args else None for (ev, args) in self.events if ev == event]

    async def wait_until(
        self, predicate: Callable[[], bool], timeout: float = WAIT, what: str = ""
    ) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"{self!r}: timed out after {timeout} s waiting for {what or predicate}; "
                f"last events: {self.events[-5:]!r}"
            ) from None

    async def wait_for(self, event: str, count: int = 1, timeout: float = WAIT) -> list[Any]:
        await self.wait_until(lambda: len(self.of(event)) >= count, timeout, f"{count} x {event!r}")
        return self.of(event)

    # -- commands (implemented per client) ---------------------------------------

    async def connect(self, url: str, auth: Any, *, upgrade: bool = False) -> Connected:
        raise NotImplementedError

    async def call(self, event: str, payload: Any, timeout: float = WAIT) -> Any:
        """Emit ``event`` with one argument and return the acknowledgement."""
        raise NotImplementedError

    async def kill(self) -> None:
        """End the transport without a clean Socket.IO/Engine.IO goodbye."""
        raise NotImplementedError

    async def disconnect(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def connect_ok(self, url: str, token: str, *, upgrade: bool = False) -> Connected:
        result = await self.connect(url, {"token": token}, upgrade=upgrade)
        assert result.connected, f"{self!r} could not connect: {result}"
        return result


class PyClient(Client):
    kind = "python"

    def __init__(self, label: str, transports: list[str]) -> None:
        super().__init__(label, transports)
        self.sio: socketio.AsyncClient | None = None
        self._connect_error: list[Any] = []

    def _new(self) -> socketio.AsyncClient:
        sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)

        async def catch_all(event: str, *args: Any) -> None:
            self.record(event, list(args))

        async def on_connect_error(*args: Any) -> None:
            self._connect_error.extend(args)

        async def on_disconnect(*args: Any) -> None:
            self.record("$disconnect", list(args))

        sio.on("*", catch_all)
        sio.on("connect_error", on_connect_error)
        sio.on("disconnect", on_disconnect)
        return sio

    async def connect(self, url: str, auth: Any, *, upgrade: bool = False) -> Connected:
        await self.disconnect()
        self.sio = self._new()
        self._connect_error = []
        transports = list(self.transports)
        try:
            await asyncio.wait_for(
                self.sio.connect(
                    url,
                    auth=auth,
                    transports=transports,
                    socketio_path="/socket.io/",
                    wait_timeout=WAIT,
                ),
                WAIT + 1,
            )
        except socketio.exceptions.ConnectionError as exc:
            error = self._connect_error[0] if self._connect_error else None
            if isinstance(error, dict):
                return Connected(False, error.get("message"), error.get("data"))
            return Connected(False, str(error if error is not None else exc), None)
        return Connected(True, transport=self.sio.transport())

    async def call(self, event: str, payload: Any, timeout: float = WAIT) -> Any:
        assert self.sio is not None, "not connected"
        try:
            return await self.sio.call(event, payload, timeout=timeout)
        except socketio.exceptions.TimeoutError:
            raise ClientFailure(f"{self!r}: no ack for {event!r} within {timeout} s") from None

    async def kill(self) -> None:
        assert self.sio is not None
        eio = self.sio.eio
        if eio.current_transport == "websocket" and eio.ws is not None:
            # Close the WebSocket under Engine.IO: no CLOSE packet is sent.
            await eio.ws.close()
        else:
            await eio.disconnect(abort=True)
        with contextlib.suppress(TimeoutError):
            await self.wait_until(lambda: self.sio is None or not self.sio.connected, WAIT)

    async def disconnect(self) -> None:
        if self.sio is not None:
            sio, self.sio = self.sio, None
            if sio.connected:
                await asyncio.wait_for(sio.disconnect(), WAIT)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.disconnect()


class NodeClient(Client):
    kind = "node"

    def __init__(self, label: str, transports: list[str]) -> None:
        super().__init__(label, transports)
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._ready = asyncio.Event()
        self.stderr = b""
        self.fatal: list[str] = []

    async def start(self, hard_timeout: float = 100.0) -> None:
        node = shutil.which("node")
        if node is None:
            raise AssertionError("node is not installed (see scripts/ensure-system-deps.sh)")
        if not (JS_DIR / "node_modules" / "socket.io-client").is_dir():
            raise AssertionError("tests/js/node_modules is missing: run `make node-deps`")
        self.proc = await asyncio.create_subprocess_exec(
            node,
            str(JS_DIR / "collab_driver.mjs"),
            json.dumps({"hardTimeout": int(hard_timeout * 1000)}),
            cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=16 * 1024 * 1024,
        )
        self._reader = asyncio.get_running_loop().create_task(self._read())
        try:
            await asyncio.wait_for(self._ready.wait(), 10.0)
        except TimeoutError:
            raise AssertionError(f"{self!r}: the Node driver did not start") from None

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            msg = decode_bin(json.loads(line))
            if "ready" in msg:
                self._ready.set()
            elif "fatal" in msg:
                self.fatal.append(msg["fatal"])
            elif "event" in msg:
                self.record(msg["event"], msg["args"])
            elif "id" in msg:
                future = self._pending.pop(msg["id"], None)
                if future is not None and not future.done():
                    if msg["ok"]:
                        future.set_result(msg["result"])
                    else:
                        future.set_exception(ClientFailure(f"{self!r}: {msg['error']}"))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ClientFailure(f"{self!r}: the Node driver exited"))
        self._pending.clear()

    async def command(self, cmd: str, timeout: float = WAIT + 2, **fields: Any) -> Any:
        assert self.proc is not None and self.proc.stdin is not None
        self._next_id += 1
        ident = self._next_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        line = json.dumps(encode_bin({"id": ident, "cmd": cmd, **fields})) + "\n"
        self.proc.stdin.write(line.encode())
        await self.proc.stdin.drain()
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self._pending.pop(ident, None)
            raise ClientFailure(f"{self!r}: no answer to {cmd} within {timeout} s") from None

    async def connect(self, url: str, auth: Any, *, upgrade: bool = False) -> Connected:
        state = await self.command(
            "connect", url=url, transports=self.transports, auth=auth, upgrade=upgrade
        )
        if state["connected"]:
            return Connected(True, transport=state.get("transport"))
        return Connected(False, state.get("error"), state.get("data"))

    async def call(self, event: str, payload: Any, timeout: float = WAIT) -> Any:
        args = await self.command(
            "call", timeout=timeout + 2, event=event, args=[payload], ms=int(timeout * 1000)
        )
        return args[0] if len(args) == 1 else args

    async def kill(self) -> None:
        await self.command("kill")
        await self.wait_until(lambda: bool(self.of("$disconnect")), WAIT, "the disconnect")

    async def disconnect(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            await self.command("disconnect")

    async def close(self) -> None:
        if self.proc is None:
            return
        proc = self.proc
        if proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.command("exit", timeout=3.0)
            with contextlib.suppress(Exception):
                assert proc.stdin is not None
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 3.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 3.0)
        if proc.stderr is not None:
            with contextlib.suppress(Exception):
                self.stderr = await asyncio.wait_for(proc.stderr.read(), 1.0)
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()


# -- the server -----------------------------------------------------------------


@dataclass
class StoreSpec:
    """Where one test's data lives: a SQLite file or a PostgreSQL schema."""

    kind: str  # "sqlite" | "postgres"
    path: str = ""
    schema: str = ""

    def make(self) -> Any:
        """A new, unopened ``OperationStore`` over this test's database."""
        if self.kind == "sqlite":
            from cowrite.backends.store_sqlite import SqliteStore

            return SqliteStore(self.path)
        from cowrite.backends.store_postgres import PostgresStore

        return PostgresStore(
            PG_DSN, min_size=1, max_size=4, server_settings={"search_path": self.schema}
        )


@dataclass
class Server:
    """One cowrite application started in-process by ``build_app``, restartable."""

    store_spec: StoreSpec
    data_dir: str
    environ: dict[str, str] = field(default_factory=dict)
    app: Any = None
    starts: int = 0

    @property
    def url(self) -> str:
        assert self.app is not None, "server not started"
        return f"http://127.0.0.1:{self.app.port}"

    async def start(self) -> Server:
        from cowrite.app import build_app
        from cowrite.config import load_app_settings

        settings = load_app_settings(
            environ={
                "COWRITE_AUTH_SECRET": SECRET,
                "COWRITE_CORS_ORIGINS": "http://127.0.0.1",
                **self.environ,
            },
            server_overrides={
                "host": "127.0.0.1",
                "port": 0,
                "use_uvloop": False,
                "gc_freeze": False,
            },
            store=f"sqlite:///{self.data_dir}/unused.db",
            data_dir=self.data_dir,
            dev_mode=False,
        )
        app = build_app(settings, store=self.store_spec.make())
        await asyncio.wait_for(app.start(), 15.0)
        self.app = app
        self.starts += 1
        return self

    async def stop(self) -> None:
        app, self.app = self.app, None
        if app is not None:
            await asyncio.wait_for(app.stop(), 15.0)

    async def restart(self) -> Server:
        await self.stop()
        return await self.start()


def token(user_id: str, name: str | None = None, ttl: float = 600, **kw: Any) -> str:
    from cowrite.auth import AuthSettings, mint_token

    return mint_token(
        AuthSettings(secret=kw.pop("secret", SECRET)),
        user_id=user_id,
        name=name or user_id.title(),
        ttl=ttl,
        **kw,
    )


def unique_doc(prefix: str = "doc") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def edit_times(client: Client, doc: str, n: int) -> list[int]:
    """``n`` acknowledged edits of ``doc``, one after the other; their seqs."""
    seqs = []
    for i in range(n):
        ack = await client.call(
            "edit-operation",
            {"documentId": doc, "operation": {"i": i}, "clientOpId": uuid.uuid4().hex},
        )
        assert ack["ok"], ack
        seqs.append(ack["seq"])
    return seqs


# -- operation logs ---------------------------------------------------------------


@dataclass
class LogView:
    """What one client knows of one document's log: ``seq -> (clientOpId, operation)``.

    Fed from the join ack's ``ops``, ``sync`` pages, ``remote-edit`` events and
    the client's own acks; every source and duplicate is kept for the checks.
    """

    document_id: str
    entries: dict[int, tuple[Any, Any]] = field(default_factory=dict)
    duplicates: list[tuple[str, int]] = field(default_factory=list)
    remote_order: list[int] = field(default_factory=list)

    def add(self, source: str, seq: int, client_op_id: Any, operation: Any) -> None:
        if seq in self.entries:
            self.duplicates.append((source, seq))
        self.entries[seq] = (client_op_id, operation)
        if source == "remote-edit":
            self.remote_order.append(seq)

    def add_ops(self, source: str, ops: list[dict[str, Any]]) -> None:
        for op in ops:
            assert op["documentId"] == self.document_id
            self.add(source, op["seq"], op["clientOpId"], op["operation"])

    def add_remote_edits(self, client: Client, start: int = 0) -> int:
        """Take ``remote-edit`` events of this document from ``client.events[start:]``."""
        events = client.events[start:]
        for event, args in events:
            if event == "remote-edit" and args[0]["documentId"] == self.document_id:
                edit = args[0]
                self.add("remote-edit", edit["seq"], edit["clientOpId"], edit["operation"])
        return start + len(events)

    @property
    def head(self) -> int:
        """The last seq of the gap-free prefix 1..n this view holds."""
        n = 0
        while n + 1 in self.entries:
            n += 1
        return n

    def as_list(self) -> list[tuple[int, Any, Any]]:
        return [(seq, *self.entries[seq]) for seq in sorted(self.entries)]


async def read_all(client: Client, document_id: str, limit: int = 40) -> list[dict[str, Any]]:
    """Every operation of the document, paged with ``sync``; checks the paging contract."""
    ops: list[dict[str, Any]] = []
    since = 0
    for _ in range(1000):
        page = await client.call(
            "sync", {"documentId": document_id, "since": since, "limit": limit}
        )
        assert page["ok"], page
        assert len(page["ops"]) <= limit, page
        ops.extend(page["ops"])
        if page["ops"]:
            since = page["ops"][-1]["seq"]
        if not page["more"]:
            assert page["head"] == since, f"head {page['head']} after the last page at {since}"
            return ops
        assert page["ops"], f"more=true with an empty page: {page}"
    raise AssertionError("sync never ended")


async def join_and_catch_up(
    client: Client, document_id: str, since: int = 0, limit: int = 40
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``join-document`` with ``since``, then ``sync`` pages while ``more``."""
    ack = await client.call("join-document", {"documentId": document_id, "since": since})
    assert ack["ok"], f"{client!r} join failed: {ack}"
    ops = list(ack["ops"])
    more = ack["more"]
    last = ops[-1]["seq"] if ops else since
    while more:
        page = await client.call("sync", {"documentId": document_id, "since": last, "limit": limit})
        assert page["ok"], page
        ops.extend(page["ops"])
        if page["ops"]:
            last = page["ops"][-1]["seq"]
        more = page["more"]
    return ack, ops


def check_log(view: LogView, count: int, who: str) -> None:
    """``view`` holds exactly seqs 1..count, each once; remote edits came in order."""
    assert not view.duplicates, f"{who}: seqs received more than once: {view.duplicates[:10]}"
    missing = sorted(set(range(1, count + 1)) - set(view.entries))
    extra = sorted(set(view.entries) - set(range(1, count + 1)))
    assert not missing and not extra, f"{who}: missing seqs {missing[:20]}, unexpected {extra[:20]}"
    assert view.remote_order == sorted(view.remote_order), (
        f"{who}: remote-edit events out of order: {view.remote_order}"
    )


REDIS_URL = "redis://127.0.0.1:6379/0"


async def two_instances(
    servers: list[Server], tmp_path: Path, spec: StoreSpec, **environ: str
) -> tuple[Server, Server]:
    """Instances "one" and "two" sharing Redis under a fresh prefix (and the
    store), started with ``environ``; added to ``servers`` (the fixture that
    stops them)."""
    prefix = f"cowrite-test:{uuid.uuid4().hex}:"
    shared = {"COWRITE_REDIS_URL": REDIS_URL, "COWRITE_REDIS_PREFIX": prefix}
    started = []
    for name in ("one", "two"):
        server = Server(
            spec,
            data_dir=str(tmp_path / "data"),
            environ={**environ, "COWRITE_INSTANCE_ID": name, **shared},
        )
        servers.append(server)
        started.append(await server.start())
    return started[0], started[1]
