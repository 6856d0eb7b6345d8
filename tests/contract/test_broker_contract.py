"""The ``Broker`` contract, run against every implementation.

Two kinds of tests:

- Normal operation takes the ``cluster`` fixture, parametrised over ``memory``
  (brokers sharing one ``MemoryHub``) and ``redis`` (the real server at
  ``COWRITE_TEST_REDIS_URL``, default ``redis://127.0.0.1:6379/0``, each test
  on a channel prefix of its own so that runs can overlap).
- Failures take the ``faulty`` fixture, parametrised over ``memory`` (the
  hub's simulated outage) and ``redis`` (a ``redis-server`` the test starts on
  a free port, kills with SIGKILL or freezes with SIGSTOP, and restarts on the
  same port).

Without a reachable Redis, or without ``redis-server``, the redis tests skip,
except under ``CI`` where they fail.  Every wait is bounded.

"Nothing more arrives" is checked with a fence: a message published after the
ones that must not arrive, to a document the receiver is subscribed to.  Both
transports deliver to one receiver in one global order, which is more than the
contract promises (only per-document order); the fence relies on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from cowrite.backends.broker import (
    Broker,
    BrokerMessage,
    DisconnectMessage,
    InfoReply,
    InfoRequest,
    InstanceMessage,
    MessageEncodingError,
    OperationMessage,
    PresenceMessage,
    RoleMessage,
    encode,
)
from cowrite.backends.broker_memory import MemoryBroker, MemoryHub
from cowrite.backends.broker_redis import RedisBroker
from cowrite.errors import LocalError

REDIS_URL = os.environ.get("COWRITE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WAIT = 5.0  # seconds: the bound of every wait for something that should happen


def skip_or_fail(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)")
    pytest.skip(reason)


class Recorder:
    """A ``BrokerListener`` that records what it is told and lets tests wait for it."""

    def __init__(self) -> None:
        self.messages: list[BrokerMessage] = []
        self.instance_messages: list[InstanceMessage] = []
        self.availability: list[bool] = []
        self._changed = asyncio.Event()

    def on_message(self, message: BrokerMessage) -> None:
        self.messages.append(message)
        self._changed.set()

    def on_instance_message(self, message: InstanceMessage) -> None:
        self.instance_messages.append(message)
        self._changed.set()

    def on_availability(self, available: bool) -> None:
        self.availability.append(available)
        self._changed.set()

    async def wait_for(
        self, what: str, predicate: Callable[[], bool], timeout: float = WAIT
    ) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pytest.fail(
                f"timed out after {timeout} s waiting for {what}; "
                f"availability={self.availability} messages={self.messages[-5:]!r}"
            )

    async def wait_count(self, n: int, timeout: float = WAIT) -> None:
        await self.wait_for(f"{n} messages", lambda: len(self.messages) >= n, timeout)

    def of(self, document_id: str) -> list[BrokerMessage]:
        return [m for m in self.messages if m.document_id == document_id]


@dataclass
class Node:
    """One started broker and what its listener heard."""

    broker: Broker
    heard: Recorder

    def up(self) -> bool:
        """``broker.available`` (a call, so that type checkers do not narrow it)."""
        return self.broker.available


@dataclass
class Cluster:
    """Brokers of one test sharing one transport."""

    name: str
    factory: Callable[[], Broker]
    nodes: list[Node] = field(default_factory=list)

    async def node(self) -> Node:
        node = Node(self.factory(), Recorder())
        self.nodes.append(node)
        await node.broker.start(node.heard)
        return node

    async def stop(self) -> None:
        for node in self.nodes:
            await node.broker.stop()


async def redis_reachable_or_skip(url: str) -> None:
    client = Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        async with asyncio.timeout(2.0):
            await client.ping()
    except (OSError, TimeoutError, RedisError) as exc:
        skip_or_fail(f"Redis at {url} is unreachable: {type(exc).__name__}: {exc}")
    finally:
        await client.aclose()


def fresh_prefix() -> str:
    """A channel prefix no other test (or run) uses."""
    return f"cowrite-test:{uuid.uuid4().hex}:"


@pytest.fixture(params=["memory", "redis"])
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    if request.param == "memory":
        hub = MemoryHub()
        c = Cluster("memory", lambda: MemoryBroker(hub))
    else:
        await redis_reachable_or_skip(REDIS_URL)
        prefix = fresh_prefix()
        c = Cluster("redis", lambda: RedisBroker(REDIS_URL, channel_prefix=prefix))
    try:
        yield c
    finally:
        await c.stop()


def op(
    node: Node, doc: str, seq: int, payload: bytes = b"op", client_op_id: str | None = None
) -> OperationMessage:
    return OperationMessage(
        document_id=doc,
        origin=node.broker.instance_id,
        seq=seq,
        user_id="alice",
        client_op_id=client_op_id,
        payload=payload,
    )


async def fence(sender: Node, receiver: Node, doc: str) -> None:
    """Publish a marker on ``doc`` (which ``receiver`` subscribes) and wait for it."""
    marker = RoleMessage(doc, sender.broker.instance_id, f"fence-{uuid.uuid4().hex}", None)
    assert await sender.broker.publish(marker)
    await receiver.heard.wait_for(f"fence on {doc!r}", lambda: marker in receiver.heard.messages)
    receiver.heard.messages.remove(marker)


# --- normal operation ------------------------------------------------------------

DOCS = [
    "plain",
    "with space: and colons",
    "ünïcødé 文档 🎉",
    "a b",
    "a%20b",  # must not share a channel with "a b"
    "doc:with:colons",
    "*?[glob]",
]


async def test_every_message_type_crosses_with_equal_fields(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    for doc in DOCS:
        await b.broker.subscribe(doc)
    origin = a.broker.instance_id
    sent: list[BrokerMessage] = []
    for doc in DOCS:
        sent += [
            op(a, doc, 1, bytes(range(256)), client_op_id="c-1"),
            op(a, doc, 2, os.urandom(256 * 1024)),
            op(a, doc, 3, b""),
            PresenceMessage(doc, origin, "bob", "Bob B.", "joined", None),
            PresenceMessage(
                doc,
                origin,
                "bob",
                "Bob B.",
                "state",
                {"cursor": {"line": 3, "ch": -1}, "sel": [1, 2.5, "x", True, None], "é": "✓"},
            ),
            PresenceMessage(doc, origin, "bob", "", "left", "just a string"),
            RoleMessage(doc, origin, "carol", "editor"),
            RoleMessage(doc, origin, "carol", None),
        ]
    for message in sent:
        assert await a.broker.publish(message)
    await b.heard.wait_count(len(sent))
    for doc in DOCS:
        assert b.heard.of(doc) == [m for m in sent if m.document_id == doc], doc
    assert len(b.heard.messages) == len(sent)
    assert all(
        type(m.payload) is bytes for m in b.heard.messages if isinstance(m, OperationMessage)
    )


async def test_an_instance_never_hears_itself(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    await a.broker.subscribe("d")
    await b.broker.subscribe("d")
    assert await a.broker.publish(op(a, "d", 1))
    await b.heard.wait_count(1)
    await fence(b, a, "d")  # b's marker follows a's message at a's subscriber
    assert a.heard.messages == []
    assert b.heard.messages == [op(a, "d", 1)]


async def test_only_subscribed_documents_are_delivered(cluster: Cluster) -> None:
    a, b, c = await cluster.node(), await cluster.node(), await cluster.node()
    await b.broker.subscribe("mine")
    await c.broker.subscribe("fence")
    for doc in ["other", "mine ", "Mine", "mine", "min"]:
        assert await a.broker.publish(op(a, doc, 1))
    await b.heard.wait_count(1)
    await fence(a, c, "fence")
    await b.broker.subscribe("fence-b")
    await fence(a, b, "fence-b")
    assert b.heard.messages == [op(a, "mine", 1)]
    assert c.heard.messages == []


async def test_unsubscribe_stops_delivery_and_subscribe_restarts_it(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    await b.broker.subscribe("d")
    await b.broker.subscribe("fence")
    assert await a.broker.publish(op(a, "d", 1))
    await b.heard.wait_count(1)
    await b.broker.unsubscribe("d")
    assert await a.broker.publish(op(a, "d", 2))
    await fence(a, b, "fence")
    assert b.heard.messages == [op(a, "d", 1)]
    await b.broker.subscribe("d")
    assert await a.broker.publish(op(a, "d", 3))
    await b.heard.wait_count(2)
    assert b.heard.messages == [op(a, "d", 1), op(a, "d", 3)]


async def test_unsubscribe_drops_what_was_already_on_its_way(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    await b.broker.subscribe("d")
    await b.broker.subscribe("fence")
    # Publish without yielding to the receiver, then unsubscribe at once.
    results = await asyncio.gather(*(a.broker.publish(op(a, "d", i)) for i in range(1, 51)))
    assert all(results)
    await b.broker.unsubscribe("d")
    got = len(b.heard.messages)
    await fence(a, b, "fence")
    assert len(b.heard.messages) == got


async def test_subscribing_twice_is_once_and_unsubscribing_twice_is_harmless(
    cluster: Cluster,
) -> None:
    a, b = await cluster.node(), await cluster.node()
    await b.broker.unsubscribe("never-subscribed")
    await b.broker.subscribe("d")
    await b.broker.subscribe("d")
    await asyncio.gather(b.broker.subscribe("d"), b.broker.subscribe("d"))
    assert await a.broker.publish(op(a, "d", 1))
    await b.heard.wait_count(1)
    await fence(a, b, "d")
    assert b.heard.messages == [op(a, "d", 1)]
    await b.broker.unsubscribe("d")
    await b.broker.unsubscribe("d")
    await b.broker.subscribe("fence")
    assert await a.broker.publish(op(a, "d", 2))
    await fence(a, b, "fence")
    assert b.heard.messages == [op(a, "d", 1)]
    # Two first subscriptions at once: both return with the subscription in place.
    await asyncio.gather(b.broker.subscribe("e"), b.broker.subscribe("e"))
    assert await a.broker.publish(op(a, "e", 1))
    await b.heard.wait_count(2)
    await fence(a, b, "e")
    assert b.heard.messages == [op(a, "d", 1), op(a, "e", 1)]


async def test_a_subscription_is_in_place_when_subscribe_returns(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    docs = [f"doc-{i}" for i in range(200)]
    for doc in docs:
        await b.broker.subscribe(doc)
        assert await a.broker.publish(op(a, doc, 1))  # right away, on another connection
    await b.heard.wait_count(len(docs))
    assert sorted(m.document_id for m in b.heard.messages) == sorted(docs)


async def test_order_per_document_is_the_order_of_publish_calls(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    await b.broker.subscribe("x")
    await b.broker.subscribe("y")
    # 500 awaited one by one, then 500 in flight at once (called in order).
    for seq in range(1, 251):
        assert await a.broker.publish(op(a, "x", seq))
        assert await a.broker.publish(op(a, "y", seq))
    calls = [a.broker.publish(op(a, doc, seq)) for seq in range(251, 501) for doc in ("x", "y")]
    assert all(await asyncio.gather(*calls))
    await b.heard.wait_count(1000)
    for doc in ("x", "y"):
        seqs = [m.seq for m in b.heard.of(doc) if isinstance(m, OperationMessage)]
        assert seqs == list(range(1, 501)), doc
    assert len(b.heard.messages) == 1000


async def test_publish_many_keeps_the_order_of_its_list_and_of_other_calls(
    cluster: Cluster,
) -> None:
    a, b = await cluster.node(), await cluster.node()
    await b.broker.subscribe("x")
    await b.broker.subscribe("y")
    # Batches and single publishes interleaved, some in flight at once.
    assert await a.broker.publish_many([op(a, "x", 1), op(a, "y", 1), op(a, "x", 2)]) == 3
    assert await a.broker.publish(op(a, "y", 2))
    calls = [
        a.broker.publish_many([op(a, doc, seq) for seq in range(start, start + 50)])
        for start in range(3, 503, 50)
        for doc in ("x", "y")
    ]
    assert await asyncio.gather(*calls) == [50] * len(calls)
    assert await a.broker.publish_many([]) == 0
    await b.heard.wait_count(1004)
    for doc in ("x", "y"):
        seqs = [m.seq for m in b.heard.of(doc) if isinstance(m, OperationMessage)]
        assert seqs == list(range(1, 503)), doc
    assert len(b.heard.messages) == 1004


async def test_publish_many_refuses_a_foreign_origin_and_counts_nothing_before_start(
    cluster: Cluster,
) -> None:
    a = await cluster.node()
    foreign = RoleMessage("d", "someone-else", "u", "viewer")
    with pytest.raises(LocalError):
        await a.broker.publish_many([op(a, "d", 1), foreign])
    broker = cluster.factory()
    assert await broker.publish_many([RoleMessage("d", broker.instance_id, "u", None)]) == 0
    await broker.stop()


async def test_availability_after_start_and_ping(cluster: Cluster) -> None:
    a = await cluster.node()
    await a.heard.wait_for("availability", lambda: a.heard.availability == [True])
    assert a.up()
    assert a.broker.outages == 0
    assert await a.broker.ping()


async def test_misuse_is_a_local_error(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    with pytest.raises(LocalError):
        await a.broker.start(Recorder())
    with pytest.raises(LocalError):  # b's message, published by a
        await a.broker.publish(op(b, "d", 1))
    with pytest.raises(MessageEncodingError):
        await a.broker.publish(
            PresenceMessage("d", a.broker.instance_id, "u", "U", "state", {1: object()})
        )


async def test_a_failing_listener_does_not_stop_delivery(cluster: Cluster) -> None:
    class Grumpy(Recorder):
        def on_message(self, message: BrokerMessage) -> None:
            super().on_message(message)
            if isinstance(message, OperationMessage) and message.seq == 1:
                raise RuntimeError("listener bug")

    a = await cluster.node()
    grumpy = Node(cluster.factory(), Grumpy())
    cluster.nodes.append(grumpy)
    await grumpy.broker.start(grumpy.heard)
    await grumpy.broker.subscribe("d")
    for seq in (1, 2):
        assert await a.broker.publish(op(a, "d", seq))
    await grumpy.heard.wait_count(2)


async def test_stop_is_clean_and_final(cluster: Cluster) -> None:
    before = asyncio.all_tasks()
    a, b = await cluster.node(), await cluster.node()
    await b.broker.subscribe("d")
    assert await a.broker.publish(op(a, "d", 1))
    await b.heard.wait_count(1)
    await a.broker.stop()
    await b.broker.stop()
    await b.broker.stop()  # idempotent
    assert asyncio.all_tasks() == before
    gc.collect()  # any unclosed transport would warn now, and warnings are errors
    assert not a.up() and not b.up()
    assert not await a.broker.publish(op(a, "d", 2))
    await a.broker.subscribe("d")
    await a.broker.unsubscribe("d")
    assert b.heard.availability == [True]  # stop() does not announce anything


async def test_garbage_on_a_channel_is_dropped(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    if not isinstance(b.broker, RedisBroker):
        pytest.skip("only Redis carries bytes from outside cowrite")
    await b.broker.subscribe("d")
    raw = Redis.from_url(REDIS_URL)
    try:
        for junk in [
            b"",
            b"cw",
            b"hello",
            b"cw\x01O\x00\x00\x00\x05{bad}",
            b"cw\x09O\x00\x00\x00\x00",
        ]:
            await raw.publish(b.broker.channel("d"), junk)
        # A valid frame about another document, sent on d's channel.
        stray = RoleMessage("other", "someone-else", "u", None)
        await raw.publish(b.broker.channel("d"), encode(stray))
    finally:
        await raw.aclose()
    assert await a.broker.publish(op(a, "d", 1))
    await b.heard.wait_count(1)
    await fence(a, b, "d")
    assert b.heard.messages == [op(a, "d", 1)]
    assert b.up()


async def test_publish_before_start_returns_false(cluster: Cluster) -> None:
    broker = cluster.factory()
    assert not await broker.publish(
        RoleMessage("d", broker.instance_id, "u", "viewer"),
    )
    assert await broker.publish_instances(InfoRequest(broker.instance_id, "q")) == 0
    await broker.stop()


# --- instance messages -------------------------------------------------------------


async def test_instance_messages_reach_every_other_instance_without_subscribing(
    cluster: Cluster,
) -> None:
    a, b, c = await cluster.node(), await cluster.node(), await cluster.node()
    origin = a.broker.instance_id
    sent: list[InstanceMessage] = [
        DisconnectMessage(origin, "bob ünï", "banned", "Bye: you were banned ✓"),
        InfoRequest(origin, "q-1"),
    ]
    for message in sent:
        assert await a.broker.publish_instances(message) == 2  # b and c, not a
    for heard in (b.heard, c.heard):
        await heard.wait_for("instance messages", lambda h=heard: len(h.instance_messages) >= 2)
    for node in (b, c):
        assert node.heard.instance_messages == sent
        assert node.heard.messages == []
    # a hears nothing of its own: b's answer to it is the first thing it gets.
    reply = InfoReply(b.broker.instance_id, origin, "q-1", 3, 2, {"d 1": 2, "文档": 1})
    assert await b.broker.publish_instances(reply) == 1
    await a.heard.wait_for("the reply", lambda: bool(a.heard.instance_messages))
    assert a.heard.instance_messages == [reply]


async def test_an_info_reply_reaches_its_target_only(cluster: Cluster) -> None:
    a, b, c = await cluster.node(), await cluster.node(), await cluster.node()
    reply = InfoReply(b.broker.instance_id, a.broker.instance_id, "q", 0, 0, {})
    assert await b.broker.publish_instances(reply) == 1
    await a.heard.wait_for("the reply", lambda: bool(a.heard.instance_messages))
    # A fence for c: a later message to every instance arrives after the reply would have.
    marker = DisconnectMessage(b.broker.instance_id, "fence", "x", "")
    assert await b.broker.publish_instances(marker) == 2
    await c.heard.wait_for("the fence", lambda: bool(c.heard.instance_messages))
    assert c.heard.instance_messages == [marker]
    assert (
        await b.broker.publish_instances(InfoReply(b.broker.instance_id, "nobody", "q", 0, 0, {}))
        == 0
    )


async def test_instance_messages_refuse_a_foreign_origin(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    with pytest.raises(LocalError):
        await a.broker.publish_instances(InfoRequest(b.broker.instance_id, "q"))


# --- failures --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """A ``redis-server`` of the test's own that can be killed, frozen and restarted."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.proc = subprocess.Popen(
            [
                binary,
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.directory)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + WAIT
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            assert self.proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start listening"
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)  # in case it was frozen
            self.proc.kill()
            self.proc.wait(timeout=WAIT)
            self.proc = None

    def freeze(self, frozen: bool) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP if frozen else signal.SIGCONT)


@dataclass
class Faulty(Cluster):
    """A cluster whose transport the test can take down and bring back."""

    take_down: Callable[[], None] = lambda: None
    bring_up: Callable[[], None] = lambda: None
    server: RedisServer | None = None


@pytest.fixture(params=["memory", "redis"])
def faulty(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Faulty]:
    if request.param == "memory":
        hub = MemoryHub()
        c = Faulty(
            "memory",
            lambda: MemoryBroker(hub),
            take_down=lambda: hub.set_down(True),
            bring_up=lambda: hub.set_down(False),
        )
        yield c
        return
    if shutil.which("redis-server") is None:
        skip_or_fail("redis-server is not installed")
    server = RedisServer(tmp_path)
    prefix = fresh_prefix()
    c = Faulty(
        "redis",
        # A short heartbeat, so that a frozen server is noticed within a second.
        lambda: RedisBroker(server.url, channel_prefix=prefix, heartbeat=0.4),
        take_down=server.kill,
        bring_up=server.start,
        server=server,
    )
    try:
        yield c
    finally:
        server.kill()


@pytest.fixture
async def faulty_up(faulty: Faulty) -> AsyncIterator[Faulty]:
    """``faulty`` with its transport running, and its brokers stopped afterwards."""
    faulty.bring_up()
    try:
        yield faulty
    finally:
        await faulty.stop()


async def timed_publish(node: Node, message: BrokerMessage) -> tuple[bool, float]:
    start = time.monotonic()
    ok = await node.broker.publish(message)
    return ok, time.monotonic() - start


async def test_outage_is_reported_and_recovered(faulty_up: Faulty) -> None:
    c = faulty_up
    a, b = await c.node(), await c.node()
    await b.broker.subscribe("d1")
    await b.broker.subscribe("d2")
    assert await a.broker.publish(op(a, "d1", 1))
    await b.heard.wait_count(1)
    assert b.heard.availability == [True]

    c.take_down()
    await b.heard.wait_for("the outage", lambda: b.heard.availability == [True, False])
    await a.heard.wait_for("the outage", lambda: a.heard.availability == [True, False])
    assert not b.up() and b.broker.outages == 1
    for seq in (2, 3):  # the first publish may meet a dead connection, the next a refusal
        ok, took = await timed_publish(a, op(a, "d1", seq))
        assert not ok
        assert took < 1.5
    assert not await a.broker.ping()
    async with asyncio.timeout(1.5):
        await b.broker.subscribe("d3")  # recorded, made on recovery
        await b.broker.unsubscribe("d2")

    c.bring_up()
    await b.heard.wait_for("recovery", lambda: b.heard.availability == [True, False, True])
    await a.heard.wait_for("recovery", lambda: a.heard.availability == [True, False, True])
    assert b.up() and b.broker.outages == 1
    assert await a.broker.ping()
    b.heard.messages.clear()
    for doc in ("d1", "d2", "d3"):
        assert await a.broker.publish(op(a, doc, 10))
    await fence(a, b, "d3")
    assert b.heard.messages == [op(a, "d1", 10), op(a, "d3", 10)]


async def test_unreachable_at_start_is_not_an_outage(faulty: Faulty) -> None:
    c = faulty
    c.take_down()  # nothing is running yet for redis; the hub goes down for memory
    try:
        start = time.monotonic()
        a = await c.node()
        b = await c.node()
        assert time.monotonic() - start < 4.0
        assert not a.up() and a.broker.outages == 0
        ok, took = await timed_publish(a, op(a, "d", 1))
        assert not ok and took < 1.5
        await b.broker.subscribe("d")
        c.bring_up()
        await b.heard.wait_for("first connection", lambda: b.heard.availability == [True])
        await a.heard.wait_for("first connection", lambda: a.heard.availability == [True])
        assert a.broker.outages == 0
        assert await a.broker.publish(op(a, "d", 2))
        await b.heard.wait_count(1)
        assert b.heard.messages == [op(a, "d", 2)]
    finally:
        await c.stop()


async def test_a_frozen_redis_is_detected_by_heartbeat(faulty_up: Faulty) -> None:
    c = faulty_up
    if c.server is None:
        pytest.skip("a frozen transport is a Redis failure mode")
    a, b = await c.node(), await c.node()
    await b.broker.subscribe("d")
    assert await a.broker.publish(op(a, "d", 1))
    await b.heard.wait_count(1)

    c.server.freeze(True)  # connections stay open, nothing answers
    ok, took = await timed_publish(a, op(a, "d", 2))
    assert not ok
    assert took < 1.5
    await b.heard.wait_for("the outage", lambda: b.heard.availability == [True, False])
    assert b.broker.outages == 1

    c.server.freeze(False)
    await b.heard.wait_for("recovery", lambda: b.heard.availability == [True, False, True])
    assert await a.broker.publish(op(a, "d", 3))
    # seq 2 was not confirmed, yet Redis may still have run it once it woke up.
    await b.heard.wait_for("seq 3", lambda: op(a, "d", 3) in b.heard.messages)
    assert [m.seq for m in b.heard.messages if isinstance(m, OperationMessage)] in (
        [1, 3],
        [1, 2, 3],
    )
