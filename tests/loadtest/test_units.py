"""The load generator's pieces without sockets: histogram, framing, plan, one
client fed bytes through a recording transport, and the click command."""

from __future__ import annotations

import asyncio
import base64
import gc
import os
import random
import socket
import threading
import time
from pathlib import Path
from typing import Any

import click
import orjson
import pytest
import uvloop
from click.testing import CliRunner
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader
from websockets.utils import accept_key

from cowrite.client.transport import WebSocketClient, parse_uri
from cowrite.errors import ConfigError
from cowrite.loadtest.cli import loadtest_command
from cowrite.loadtest.client import Client, ConnectFailed, Context, SioWebSocket
from cowrite.loadtest.hist import NBUCKETS, Histogram, bucket_bounds, bucket_of
from cowrite.loadtest.plan import Plan, parse_target, source_address, worker_plans, worker_ranges

SECRET = "loadtest-unit-secret-" + "u" * 32

# -- histogram ------------------------------------------------------------------


def test_buckets_tile_the_range() -> None:
    expected_low = 0
    for index in range(NBUCKETS):
        low, high = bucket_bounds(index)
        assert low == expected_low and high > low
        assert bucket_of(low) == index and bucket_of(high - 1) == index
        expected_low = high


def test_quantiles_are_within_bucket_precision() -> None:
    rng = random.Random(7)
    values = [int(rng.lognormvariate(8, 1.5)) for _ in range(20_000)]
    hist = Histogram()
    for v in values:
        hist.record(v)
    values.sort()
    for q in (0.5, 0.95, 0.99):
        exact = values[int(q * len(values)) - 1]
        got = hist.quantile(q)
        assert got is not None
        assert abs(got - exact) <= max(1.0, exact / 32)
    assert hist.max == values[-1]


def test_histograms_merge_and_travel() -> None:
    a, b = Histogram(), Histogram()
    for v in range(0, 5000, 7):
        a.record(v)
    for v in range(100_000, 200_000, 999):
        b.record(v)
    merged = Histogram.from_wire(a.to_wire())
    merged.merge(Histogram.from_wire(b.to_wire()))
    assert merged.total == a.total + b.total
    assert merged.max == b.max
    assert Histogram().summary_ms() == {
        "count": 0, "p50": None, "p95": None, "p99": None, "mean": None, "max": None
    }  # fmt: skip


# -- RFC 6455 client side (the shared transport) -------------------------------------


def test_accept_matches_rfc_example() -> None:
    # RFC 6455 section 1.3.
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


class Recorder(WebSocketClient):
    """The shared client WebSocket with hooks that record what they get."""

    def __init__(self) -> None:
        super().__init__(parse_uri("ws://127.0.0.1:9/socket.io/?EIO=4"), max_size=1 << 24)
        self.got: list[tuple[int, bytes]] = []
        self.ended: tuple[str, float | None] | None = None

    def ws_message(self, payload: bytes, text: bool) -> None:
        self.got.append((0x1 if text else 0x2, payload))

    def ws_closed(self, reason: str, retry_after: float | None) -> None:
        self.ended = (reason, retry_after)


def opened(rest: bytes = b"") -> tuple[Recorder, RecordingTransport]:
    ws = Recorder()
    transport = RecordingTransport()
    ws.connection_made(transport)  # type: ignore[arg-type]
    transport.out.clear()
    ws.data_received(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(ws.key).encode() + b"\r\n\r\n" + rest
    )
    assert ws.ended is None
    return ws, transport


def test_handshake_response_parsing() -> None:
    ws = Recorder()
    ws.connection_made(RecordingTransport())  # type: ignore[arg-type]
    ws.data_received(b"HTTP/1.1 101 Switching")
    assert ws.ended is None
    ws = Recorder()
    ws.connection_made(RecordingTransport())  # type: ignore[arg-type]
    ws.data_received(b"HTTP/1.1 503 Busy\r\nRetry-After: 2\r\n\r\n\x81\x01x")
    assert ws.ended is not None and "HTTP 503" in ws.ended[0]
    assert ws.ended[1] == 2.0
    ws, _ = opened(b"\x81\x01x")  # the frames right after the head are read
    assert ws.got == [(0x1, b"x")]


def test_a_forked_child_never_reuses_its_parents_next_masking_keys() -> None:
    from cowrite.client import transport

    transport._mask_key()  # the pool holds keys now
    upcoming = transport._mask_pool[transport._mask_at : transport._mask_at + 20]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its first keys, then leave at once
        os.write(write, b"".join(transport._mask_key() for _ in range(5)))
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        childs = pipe.read()
    os.waitpid(pid, 0)
    assert len(childs) == 20 and childs != upcoming


def test_the_upgrade_request_is_websockets_own_with_a_fresh_key() -> None:
    keys = set()
    for _ in range(3):
        ws = Recorder()
        transport = RecordingTransport()
        ws.connection_made(transport)  # type: ignore[arg-type]
        assert bytes(transport.out) == (
            b"GET /socket.io/?EIO=4 HTTP/1.1\r\nHost: 127.0.0.1:9\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + ws.key.encode() + b"\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        assert len(base64.b64decode(ws.key, validate=True)) == 16  # RFC 6455 section 4.1
        keys.add(ws.key)
    assert len(keys) == 3


def _answer(ws: Recorder, head: bytes) -> tuple[str, float | None] | None:
    ws.connection_made(RecordingTransport())  # type: ignore[arg-type]
    ws.data_received(head.replace(b"ACCEPT", accept_key(ws.key).encode()) + b"\r\n")
    return ws.ended


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: ACCEPT\r\n",
        # Header names and the Upgrade/Connection values are case-insensitive;
        # Connection is a token list (RFC 9110 section 7.6.1).
        b"HTTP/1.1 101 OK\r\nupgrade: WebSocket\r\nCONNECTION: keep-alive, upgrade\r\n"
        b"sec-websocket-accept: ACCEPT\r\n",
    ],
)
def test_a_proper_101_opens_the_connection(head: bytes) -> None:
    ws = Recorder()
    assert _answer(ws, head) is None
    ws.data_received(b"\x81\x02ok")
    assert ws.got == [(0x1, b"ok")]


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n",
            "upgrade: invalid Sec-WebSocket-Accept header",
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: ACCEPT\r\n",
            "upgrade: invalid Upgrade header",
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: ACCEPT\r\n",
            "upgrade: invalid Upgrade header",
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n"
            b"Sec-WebSocket-Accept: ACCEPT\r\n",
            "upgrade: invalid Connection header",
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: ACCEPT\r\nSec-WebSocket-Accept: ACCEPT\r\n",
            "upgrade: invalid Sec-WebSocket-Accept header",
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: ACCEPT\r\nSec-WebSocket-Extensions: permessage-deflate\r\n",
            "upgrade: an extension was not requested",
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: ACCEPT\r\nSec-WebSocket-Protocol: chat\r\n",
            "upgrade: a subprotocol was not requested",
        ),
        (b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\n", "upgrade: HTTP 429"),
        (b"HTTP/1.1 200 OK\r\nUpgrade: websocket\r\n", "upgrade: HTTP 200"),
    ],
)
def test_an_improper_answer_fails_the_connection(head: bytes, reason: str) -> None:
    # RFC 6455 section 4.1: the client "MUST _Fail the WebSocket Connection_".
    ws = Recorder()
    assert _answer(ws, head) == (reason, 7.0 if b"Retry-After" in head else None)
    assert ws.refused_status == (None if b" 101 " in head else int(head[9:12]))


def test_a_response_that_is_not_http_fails_the_connection() -> None:
    ws = Recorder()
    ended = _answer(ws, b"SSH-2.0-OpenSSH_9.2\r\nfoo\r\n")
    assert ended is not None and ended[0].startswith("upgrade: invalid HTTP response")


def test_closing_an_open_connection_sends_a_close_frame() -> None:
    ws, transport = opened()
    ws.close(1001)
    assert transport.sent_frames() == [(Opcode.CLOSE, (1001).to_bytes(2, "big"))]
    assert transport.aborted  # the TCP connection is closed once it is written


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536, 70_000])
def test_client_frames_parse_as_masked_frames(size: int) -> None:
    payload = bytes(random.Random(size).getrandbits(8) for _ in range(size))
    ws, transport = opened()
    ws.send_text(payload)
    reader = StreamReader()
    reader.feed_data(bytes(transport.out))
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=True, max_size=None, extensions=[])
    with pytest.raises(StopIteration) as stop:
        next(parser)
    frame = stop.value.value
    assert frame.opcode is Opcode.TEXT and frame.fin and frame.data == payload


def test_frame_reader_any_segmentation() -> None:
    rng = random.Random(3)
    frames = [
        Frame(Opcode.TEXT, b"42[1]"),
        Frame(Opcode.TEXT, b"a" * 300, fin=False),
        Frame(Opcode.PING, b"p"),  # control frames may come between fragments
        Frame(Opcode.CONT, b"b" * 70_000, fin=False),
        Frame(Opcode.CONT, b"c", fin=True),
        Frame(Opcode.BINARY, bytes(range(256))),
    ]
    stream = b"".join(f.serialize(mask=False, extensions=[]) for f in frames)
    want = [
        (0x1, b"42[1]"),
        (0x1, b"a" * 300 + b"b" * 70_000 + b"c"),
        (0x2, bytes(range(256))),
    ]
    for _ in range(50):
        ws, transport = opened()
        pos = 0
        while pos < len(stream):
            step = rng.choice([1, 2, 3, 7, 100, 5000, 100_000])
            ws.data_received(stream[pos : pos + step])
            pos += step
        assert ws.got == want
        assert transport.sent_frames() == [(Opcode.PONG, b"p")]  # websockets answered the ping


# -- plan -----------------------------------------------------------------------


def test_plan_assignment() -> None:
    plan = Plan(
        urls=("http://127.0.0.1:1", "http://127.0.0.1:2"),
        clients=103,
        room_size=5,
        editors=0.1,
        workers=3,
        secret=SECRET,
        run_id="r",
    )
    assert worker_ranges(103, 3) == [(0, 34), (34, 68), (68, 103)]
    assert plan.editor_count == 10 == sum(plan.is_editor(i) for i in range(103))
    assert plan.doc_id(4) == plan.doc_id(0) != plan.doc_id(5)
    assert plan.room_members(102) == 3 and plan.room_members(0) == 5
    assert [plan.url_index(i) for i in range(4)] == [0, 1, 0, 1]
    wplans = worker_plans(plan)
    assert sum(w.rate for w in wplans) == pytest.approx(plan.rate)
    assert [w.source for w in wplans] == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert source_address(Plan(urls=("http://10.1.1.1:1",), clients=1, secret=SECRET), 0) is None
    assert parse_target("http://localhost:3000").request_target == (
        "/socket.io/?EIO=4&transport=websocket"
    )


def test_a_failed_instances_clients_spread_over_the_others() -> None:
    """As nginx's ip_hash rehashes a client whose instance failed: each client
    tries its own instance, then every other one once, and the clients of one
    instance go to the others in equal shares, not all to the next one."""
    urls = tuple(f"http://127.0.0.1:{port}" for port in (1, 2, 3, 4))
    plan = Plan(urls=urls, clients=1200, secret=SECRET)
    homed_on_0 = [i for i in range(plan.clients) if plan.url_index(i) == 0]
    for i in homed_on_0:
        tried = [plan.url_index(i, attempt) for attempt in range(4)]
        assert tried[0] == 0 and sorted(tried) == [0, 1, 2, 3]
        assert plan.url_index(i, 4) == 0  # and round again
    first_fallback = [plan.url_index(i, 1) for i in homed_on_0]
    assert [first_fallback.count(u) for u in (1, 2, 3)] == [100, 100, 100]
    single = Plan(urls=urls[:1], clients=3, secret=SECRET)
    assert {single.url_index(i, attempt) for i in range(3) for attempt in range(3)} == {0}


def test_an_instance_that_failed_is_skipped_for_the_fail_timeout_as_nginx_does() -> None:
    """nginx's max_fails=1 fail_timeout (deploy/nginx.conf): once an instance
    refused a connection or answered 503, every client rehashes past it until
    the timeout ends; a timeout of ours marks nothing; when every instance is
    marked, the usual one is tried."""
    urls = tuple(f"http://127.0.0.1:{port}" for port in (1, 2, 3))
    ctx = Context(Plan(urls=urls, clients=30, secret=SECRET, fail_timeout=5.0), None)
    homed_on_0 = [i for i in range(30) if ctx.plan.url_index(i) == 0]
    assert [ctx.target_for(i, 0) for i in homed_on_0] == [0] * len(homed_on_0)
    ctx.failed(0, ConnectFailed("timeout (upgrade)"))
    assert [ctx.target_for(i, 0) for i in homed_on_0] == [0] * len(homed_on_0)
    ctx.failed(0, ConnectFailed("ECONNREFUSED", elsewhere=True))
    assert [ctx.target_for(i, 0) for i in homed_on_0] == [
        ctx.plan.url_index(i, 1) for i in homed_on_0
    ]
    assert {ctx.target_for(i, 0) for i in homed_on_0} == {1, 2}
    assert ctx.target_for(1, 0) == 1  # the others' clients are not moved
    ctx.failed(1, ConnectFailed("http 503", elsewhere=True))
    ctx.failed(2, ConnectFailed("http 503", elsewhere=True))
    assert [ctx.target_for(i, 0) for i in homed_on_0] == [0] * len(homed_on_0)
    ctx.down_until = [time.monotonic() - 1] * 3  # the timeout has passed
    assert [ctx.target_for(i, 0) for i in homed_on_0] == [0] * len(homed_on_0)
    never = Context(Plan(urls=urls, clients=3, secret=SECRET, fail_timeout=0), None)
    never.failed(0, ConnectFailed("ECONNREFUSED", elsewhere=True))
    assert never.target_for(0, 0) == 0


def test_plan_refuses_too_many_clients_per_worker() -> None:
    with pytest.raises(ConfigError, match="workers"):
        Plan(urls=("http://127.0.0.1:1",), clients=20_000, workers=1, secret=SECRET)


# -- one client, fed bytes ----------------------------------------------------------


class RecordingTransport:
    """Stands in for the TCP transport: keeps what the client writes."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.out += data

    def get_write_buffer_size(self) -> int:
        return 0

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.aborted

    def sent_texts(self) -> list[bytes]:
        """Decode (and forget) the masked frames written so far."""
        return [data for _, data in self.sent_frames()]

    def sent_frames(self) -> list[tuple[Opcode, bytes]]:
        """Decode (and forget) the masked frames written so far, with their opcodes."""
        reader = StreamReader()
        reader.feed_data(bytes(self.out))
        reader.feed_eof()
        self.out.clear()
        texts = []
        while reader.buffer:
            parser = Frame.parse(reader.read_exact, mask=True, max_size=None, extensions=[])
            with pytest.raises(StopIteration) as stop:
                next(parser)
            texts.append((stop.value.value.opcode, stop.value.value.data))
        return texts


def server_text(text: bytes) -> bytes:
    return Frame(Opcode.TEXT, text).serialize(mask=False, extensions=[])


def test_a_refused_instance_is_skipped_at_once_then_the_backoff_applies() -> None:
    urls = ("http://127.0.0.1:9", "http://127.0.0.1:10", "http://127.0.0.1:11")
    ctx = Context(Plan(urls=urls, clients=3, room_size=3, secret=SECRET), None)
    refused = ConnectFailed("ECONNREFUSED", elsewhere=True)
    draining = ConnectFailed("upgrade: HTTP 503", retry_after=0.0, elsewhere=True)
    # Attempts 1 and 2 go to the other two instances at once (as nginx's
    # proxy_next_upstream error http_503); after a full round, the backoff.
    for failure in (refused, draining):
        assert [ctx.retry_delay(a, failure) for a in (1, 2, 4, 5)] == [0.0, 0.0, 0.0, 0.0]
        for attempt in (3, 6):
            assert ctx.retry_delay(attempt, failure) > 0
    # Any other failure (a timeout, a refusal such as 429) backs off.
    assert ctx.retry_delay(1, ConnectFailed("timeout (join)")) > 0
    assert ctx.retry_delay(1, ConnectFailed("upgrade: HTTP 429", retry_after=2.0)) >= 2.0
    single = Context(Plan(urls=urls[:1], clients=3, room_size=3, secret=SECRET), None)
    assert single.retry_delay(1, refused) > 0


def test_a_connection_to_nothing_listening_is_refused_and_leaves_nothing_open() -> None:
    """The source-bound connect (the workers' path): a port nobody listens on
    ends as ConnectFailed ECONNREFUSED marked ``elsewhere`` (nginx moves on),
    its socket closed and no longer watched by the loop."""

    async def run() -> None:
        spare = socket.create_server(("127.0.0.1", 0))
        port = spare.getsockname()[1]
        spare.close()  # now nothing listens there
        ctx = Context(
            Plan(urls=(f"http://127.0.0.1:{port}",), clients=1, secret=SECRET), "127.0.0.1"
        )
        client = Client(ctx, 0, "TOKEN", doc_id="doc-0", editor=False, members=1)
        before = _open_sockets()
        with pytest.raises(ConnectFailed) as failed:
            await client.open(0, 5.0)
        assert (failed.value.reason, failed.value.elsewhere) == ("ECONNREFUSED", True)
        gc.collect()
        assert _open_sockets() == before

    uvloop.run(run())


def _open_sockets() -> set[int]:
    """The descriptors of this process that are sockets."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                found.add(int(name))
        except FileNotFoundError:  # the listing's own descriptor, closed since
            continue
    return found


def test_connections_reset_before_the_upgrade_fail_cleanly() -> None:
    """A draining instance closes its listener with connections still in its
    backlog: the kernel resets them, whatever stage their client is at.
    Under uvloop (the workers' loop) every such attempt must end as a
    ConnectFailed, leaving no descriptor behind and closing none that is not
    its own."""

    async def run() -> None:
        listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
        listener_fd = listener.fileno()
        port = listener.getsockname()[1]
        plan = Plan(urls=(f"http://127.0.0.1:{port}",), clients=500, secret=SECRET)
        ctx = Context(plan, "127.0.0.1")
        bystander = socket.socket()
        before = _open_sockets()
        # Closed from another thread while the clients connect, as the
        # drain's listener closes while the others are busy.
        closer = threading.Timer(0.02, listener.close)
        closer.start()
        clients = [
            Client(ctx, i, "TOKEN", doc_id="doc-0", editor=False, members=1) for i in range(500)
        ]
        outcomes = await asyncio.gather(*(c.open(0, 5.0) for c in clients), return_exceptions=True)
        closer.join()
        assert all(isinstance(o, ConnectFailed) for o in outcomes), {
            repr(o) for o in outcomes if not isinstance(o, ConnectFailed)
        }
        # Refused or reset before the upgrade was answered: nginx would try
        # the next instance at once (proxy_next_upstream error).
        assert {o.elsewhere for o in outcomes if isinstance(o, ConnectFailed)} == {True}
        gc.collect()
        await asyncio.sleep(0.05)
        assert _open_sockets() == before - {listener_fd}
        os.fstat(bystander.fileno())
        bystander.close()

    uvloop.run(run())


async def test_client_connects_joins_edits_and_measures() -> None:
    plan = Plan(urls=("http://127.0.0.1:9",), clients=3, room_size=3, secret=SECRET)
    ctx = Context(plan, None)
    client = Client(ctx, 0, "TOKEN", doc_id="doc-0", editor=True, members=3)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    proto = SioWebSocket(client, plan.targets[0], 0, done)
    transport = RecordingTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    request = bytes(transport.out)
    assert request.startswith(b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n")
    transport.out.clear()

    head = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: "
    )
    open_packet = b'0{"sid":"s","upgrades":[],"pingInterval":25000,"pingTimeout":20000}'
    accept = accept_key(proto.key).encode()
    proto.data_received(head + accept + b"\r\n\r\n" + server_text(open_packet))
    assert transport.sent_texts() == [b'40{"token":"TOKEN"}']

    proto.data_received(server_text(b'40{"sid":"n"}'))
    (join,) = transport.sent_texts()
    assert join == b'420["join-document",{"documentId":"doc-0","since":0}]'
    proto.data_received(server_text(b'430[{"ok":true,"head":5,"ops":[],"more":false}]'))
    assert done.done() and client.conn is proto and client.last_seq == 5
    assert ctx.stats.connected == 1

    ctx.counting = True
    sent = time.time_ns() - 3_000_000
    body: dict[str, Any] = {"documentId": "doc-0", "userId": "u", "seq": 6, "clientOpId": "1"}
    body["operation"] = {"t": sent, "p": ""}
    proto.data_received(server_text(b"4" + orjson.dumps(["remote-edit", body]).join([b"2", b""])))
    assert ctx.stats.delivered == 1 and client.last_seq == 6
    latency = ctx.stats.latency.quantile(0.5)
    # 3 ms, within the histogram's bucket precision (1/32).
    assert latency is not None and 3000 * (1 - 1 / 32) <= latency < 1_000_000

    assert client.send_edit()
    (edit,) = transport.sent_texts()
    assert edit.startswith(b'421["edit-operation",{"documentId":"doc-0","operation":{"t":')
    proto.data_received(server_text(b'431[{"ok":true,"seq":7}]') + server_text(b"2"))
    assert ctx.stats.acked == 1 and ctx.stats.expected == 2 and client.last_seq == 7
    assert transport.sent_texts() == [b"3"]  # pong

    proto.connection_lost(None)
    assert client.conn is None and ctx.stats.connected == 0
    assert ctx.stats.drops == {"transport close": 1}


async def test_refused_upgrade_fails_the_attempt_with_retry_after() -> None:
    plan = Plan(urls=("http://127.0.0.1:9",), clients=1, secret=SECRET)
    client = Client(Context(plan, None), 0, "T", doc_id="d", editor=False, members=1)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    proto = SioWebSocket(client, plan.targets[0], 0, done)
    transport = RecordingTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    proto.data_received(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\r\n")
    assert transport.aborted
    exc = done.exception()
    assert exc is not None and "HTTP 503" in str(exc)
    assert getattr(exc, "retry_after", None) == 1.0
    assert getattr(exc, "elsewhere", None) is True  # a 503: the next instance at once


# -- the command ----------------------------------------------------------------------


def test_command_is_click_and_documents_itself() -> None:
    command = loadtest_command()
    assert isinstance(command, click.Command)
    result = CliRunner().invoke(command, ["--help"])
    assert result.exit_code == 0
    for option in (
        "--url",
        "--clients",
        "--room-size",
        "--editors",
        "--rate",
        "--duration",
        "--secret",
        "--token-file",
        "--kill-after",
        "--server-pid",
        "--json",
    ):
        assert option in result.output


def test_command_needs_a_token_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no data/dev-jwt-secret here
    result = CliRunner().invoke(
        loadtest_command(),
        ["--url", "http://127.0.0.1:9"],
        env={"COWRITE_AUTH_SECRET": None, "COWRITE_DATA_DIR": None},
    )
    assert result.exit_code == 2
    assert "--secret" in result.output
    assert "dev-jwt-secret" in result.output  # says where a dev server's secret is found


def test_command_finds_the_dev_servers_secret_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dev-jwt-secret").write_text("short\n")
    result = CliRunner().invoke(
        loadtest_command(),
        ["--url", "http://127.0.0.1:9"],
        env={"COWRITE_AUTH_SECRET": None, "COWRITE_DATA_DIR": None},
    )
    # Found and announced; this one is too short, which is checked before any client runs.
    assert "using the development secret in data/dev-jwt-secret" in result.output
    assert result.exit_code == 2 and "32 bytes" in result.output


@pytest.mark.parametrize(("growth", "ok"), [(8.9, True), (163.0, False), (None, None)])
def test_memory_row_is_the_growth_and_is_marked(growth: float | None, ok: bool | None) -> None:
    from cowrite.loadtest.report import _adr

    report = {
        "connections": {"success_rate": 100.0, "attempted": 50, "connected": 50},
        "delivery": {"latency_ms": {"p95": 3.0}},
        "reconnection": {"time_ms": {"p95": None}},
        "server": {"rss_growth_mb_per_1000_connections": growth, "cpu_us_per_delivered": 9.0},
        "generator": {"cpu_us_per_delivered": 4.0},
    }
    (row,) = [r for r in _adr(report) if "memory" in r["metric"]]
    assert row["metric"] == "server memory growth per 1,000 connections"
    # Marked even below 1,000 connections: the growth is per connection.
    assert row["value"] == growth and row["ok"] is ok
