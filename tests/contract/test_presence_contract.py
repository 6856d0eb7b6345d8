"""The ``PresenceStore`` contract, run against every implementation, and the
multi-instance guarantees of the Redis one.

The contract tests take the ``presence`` fixture, parametrised over
``memory`` (``MemoryPresence``) and ``redis`` (a started ``RedisPresence`` on
the real server at ``COWRITE_TEST_REDIS_URL``, default
``redis://127.0.0.1:6379/0``, under a key prefix of its own per test, so runs
can repeat and overlap).  Without a reachable Redis the redis tests skip,
except under ``CI`` where they fail.

The Redis-only tests run several instances over one prefix ("A", "B", "C").
An instance dies for real: it runs in a child process that is killed with
SIGKILL, so it can neither say goodbye nor keep beating.  Every wait is
bounded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.exceptions import RedisError

from cowrite.backends.presence import PresenceEntry, PresenceStore
from cowrite.backends.presence_memory import MemoryPresence
from cowrite.backends.presence_redis import RedisPresence
from cowrite.errors import ConfigError, LocalError

REDIS_URL = os.environ.get("COWRITE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

#: Liveness ttl of the instances in the multi-instance tests, in seconds.
SHORT_TTL = 0.6

#: Bound, in seconds, on any single wait for something that should happen.
WAIT = 5.0

#: Document ids that are awkward as parts of Redis keys or JSON.
ODD_IDS = (
    "",
    " ",
    "a:b",
    "count:x",
    "names:",
    "{tag}",
    "*?[]",
    '"quoted" \\ back/slash',
    '["json", 1]',
    "名前 — ✓ 🙂",
    "tab\tnew\nline",
    "x" * 300,
)


# --- fixtures -----------------------------------------------------------------


async def redis_or_skip() -> aioredis.Redis:
    """A raw client on the test Redis; skips (fails under ``CI``) if unreachable."""
    client: aioredis.Redis = aioredis.from_url(
        REDIS_URL, decode_responses=True, socket_connect_timeout=2.0, socket_timeout=WAIT
    )
    try:
        await client.ping()
    except (OSError, RedisError) as exc:
        await client.aclose()
        reason = f"Redis at {REDIS_URL} is unreachable: {type(exc).__name__}: {exc}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)")
        pytest.skip(reason)
    return client


@dataclass
class Instances:
    """Redis presence instances sharing one test's key prefix."""

    raw: aioredis.Redis
    prefix: str = field(default_factory=lambda: f"cowrite-test:{uuid.uuid4().hex}:")
    made: list[RedisPresence] = field(default_factory=list)

    def make(self, instance_id: str, *, ttl: float = SHORT_TTL) -> RedisPresence:
        p = RedisPresence(REDIS_URL, instance_id=instance_id, ttl=ttl, prefix=self.prefix)
        self.made.append(p)
        return p

    async def start(self, instance_id: str, *, ttl: float = SHORT_TTL) -> RedisPresence:
        p = self.make(instance_id, ttl=ttl)
        await p.start()
        return p

    async def keys(self) -> set[str]:
        return {k async for k in self.raw.scan_iter(match=self.prefix + "*")}

    async def close(self) -> None:
        for p in self.made:
            await p.stop()
        leftover = await self.keys()
        if leftover:
            await self.raw.delete(*leftover)
        await self.raw.aclose()


@pytest.fixture
async def instances() -> AsyncIterator[Instances]:
    group = Instances(await redis_or_skip())
    try:
        yield group
    finally:
        await group.close()


@pytest.fixture(params=["memory", "redis"])
async def presence(request: pytest.FixtureRequest) -> AsyncIterator[PresenceStore]:
    if request.param == "memory":
        yield MemoryPresence()
        return
    group = Instances(await redis_or_skip())
    try:
        # A long ttl: the contract tests must not depend on the heartbeat.
        yield await group.start("only", ttl=30.0)
    finally:
        await group.close()


def users(roster: list[PresenceEntry]) -> list[str]:
    return [e.user_id for e in roster]


async def eventually(
    probe: Callable[[], Awaitable[bool]], *, timeout: float = WAIT, every: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        await asyncio.sleep(every)


# --- the contract: counting -----------------------------------------------------


async def test_first_join_and_last_leave_of_a_user_with_several_connections(
    presence: PresenceStore,
) -> None:
    assert await presence.join("doc", "alice", "Alice", "c1")
    assert not await presence.join("doc", "alice", "Alice", "c2")
    assert not await presence.join("doc", "alice", "Alice", "c3")
    assert users(await presence.roster("doc")) == ["alice"]
    assert not await presence.leave("doc", "alice", "c2")
    assert not await presence.leave("doc", "alice", "c1")
    assert users(await presence.roster("doc")) == ["alice"]
    assert await presence.leave("doc", "alice", "c3")
    assert await presence.roster("doc") == []
    # Back again: a first connection once more.
    assert await presence.join("doc", "alice", "Alice", "c4")
    assert await presence.leave("doc", "alice", "c4")


async def test_join_and_roster_is_join_then_roster(presence: PresenceStore) -> None:
    first, roster = await presence.join_and_roster("d", "bob", "Bob", "c1")
    assert first
    assert [(e.user_id, e.name, e.state) for e in roster] == [("bob", "Bob", None)]
    await presence.set_state("d", "bob", {"cursor": 3})
    again, roster = await presence.join_and_roster("d", "bob", "Bobby", "c2")
    assert not again  # a second connection of the same user
    first_alice, roster = await presence.join_and_roster("d", "alice", "Alice", "c3")
    assert first_alice
    assert [(e.user_id, e.name, e.state) for e in roster] == [
        ("alice", "Alice", None),
        ("bob", "Bob", {"cursor": 3}),
    ]
    assert roster == await presence.roster("d")
    # It counts like join: both of bob's connections must leave.
    assert not await presence.leave("d", "bob", "c1")
    assert await presence.leave("d", "bob", "c2")


async def test_join_and_roster_many_answers_each_join_in_order(presence: PresenceStore) -> None:
    assert await presence.join_and_roster_many([]) == []
    await presence.set_state("d", "nobody", {"x": 1})  # no-op: not present
    assert await presence.join_and_roster_many([("d", "bob", "Bob", "c1")]) == [
        (True, [PresenceEntry("bob", "Bob")])
    ]
    answers = await presence.join_and_roster_many(
        [
            ("d", "alice", "Alice", "c2"),
            ("e", "bob", "Bob", "c3"),
            ("d", "bob", "Bob", "c4"),  # bob's second connection to d
            ("d", "carol", "Carol", "c5"),
        ]
    )
    assert [first for first, _ in answers] == [True, True, False, True]
    assert [[e.user_id for e in roster] for _, roster in answers] == [
        ["alice", "bob"],
        ["bob"],
        ["alice", "bob"],
        ["alice", "bob", "carol"],
    ]
    assert answers[-1][1] == await presence.roster("d")
    assert not await presence.leave("d", "bob", "c1")
    assert await presence.leave("d", "bob", "c4")
    assert await presence.leave("e", "bob", "c3")


async def test_leave_many_answers_each_leave_in_order(presence: PresenceStore) -> None:
    assert await presence.leave_many([]) == []
    await presence.join("d", "bob", "Bob", "c1")
    await presence.join("d", "bob", "Bob", "c2")
    await presence.join("d", "alice", "Alice", "c3")
    await presence.join("e", "bob", "Bob", "c4")
    assert await presence.leave_many([("d", "alice", "c3")]) == [True]
    answers = await presence.leave_many(
        [
            ("d", "bob", "c1"),  # bob still has c2 in d
            ("d", "nobody", "c9"),  # never joined
            ("e", "bob", "c4"),  # bob's only connection to e
            ("d", "bob", "c2"),  # now bob's last in d
            ("d", "bob", "c2"),  # already gone
        ]
    )
    assert answers == [False, False, True, True, False]
    assert await presence.roster("d") == []
    assert await presence.roster("e") == []


async def test_several_users_are_counted_separately(presence: PresenceStore) -> None:
    assert await presence.join("doc", "alice", "Alice", "c1")
    assert await presence.join("doc", "bob", "Bob", "c2")
    assert not await presence.join("doc", "bob", "Bob", "c3")
    assert await presence.join("doc", "carol", "Carol", "c4")
    assert await presence.roster("doc") == [
        PresenceEntry("alice", "Alice"),
        PresenceEntry("bob", "Bob"),
        PresenceEntry("carol", "Carol"),
    ]
    assert await presence.leave("doc", "alice", "c1")
    assert not await presence.leave("doc", "bob", "c2")
    assert users(await presence.roster("doc")) == ["bob", "carol"]


async def test_documents_are_independent(presence: PresenceStore) -> None:
    assert await presence.join("d1", "alice", "Alice", "c1")
    assert await presence.join("d2", "alice", "Alice", "c1")  # one connection, two documents
    assert await presence.roster("d3") == []
    assert await presence.leave("d1", "alice", "c1")
    assert users(await presence.roster("d1")) == []
    assert users(await presence.roster("d2")) == ["alice"]
    assert await presence.leave("d2", "alice", "c1")


async def test_joining_the_same_connection_twice_counts_it_once(presence: PresenceStore) -> None:
    assert await presence.join("doc", "alice", "Alice", "c1")
    assert not await presence.join("doc", "alice", "Alice", "c1")
    assert await presence.leave("doc", "alice", "c1")
    assert not await presence.leave("doc", "alice", "c1")
    assert await presence.roster("doc") == []


async def test_the_name_of_the_first_connection_is_kept(presence: PresenceStore) -> None:
    await presence.join("doc", "alice", "Alice", "c1")
    await presence.join("doc", "alice", "Alice on her phone", "c2")
    assert await presence.roster("doc") == [PresenceEntry("alice", "Alice")]


async def test_leave_of_an_unknown_connection_is_false_and_harmless(
    presence: PresenceStore,
) -> None:
    assert not await presence.leave("nowhere", "alice", "c1")
    await presence.join("doc", "alice", "Alice", "c1")
    await presence.set_state("doc", "alice", {"cursor": 3})
    assert not await presence.leave("doc", "alice", "other")  # unknown connection
    assert not await presence.leave("doc", "bob", "c1")  # someone else's connection
    assert not await presence.leave("elsewhere", "alice", "c1")  # another document
    assert await presence.roster("doc") == [PresenceEntry("alice", "Alice", {"cursor": 3})]
    assert await presence.roster("elsewhere") == []
    assert await presence.leave("doc", "alice", "c1")


async def test_concurrent_joins_and_leaves_of_one_user_count_once(
    presence: PresenceStore,
) -> None:
    conns = [f"c{i}" for i in range(20)]
    joined = await asyncio.gather(*(presence.join("doc", "alice", "Alice", c) for c in conns))
    assert sorted(joined) == [False] * 19 + [True]
    left = await asyncio.gather(*(presence.leave("doc", "alice", c) for c in conns))
    assert sorted(left) == [False] * 19 + [True]
    assert await presence.roster("doc") == []


# --- the contract: state and roster ---------------------------------------------


async def test_state_is_visible_in_the_roster_and_replaced(presence: PresenceStore) -> None:
    await presence.join("doc", "alice", "Alice", "c1")
    await presence.join("doc", "bob", "Bob", "c2")
    state = {"cursor": {"index": 12, "length": 0}, "status": "typing ✓", "ratio": 0.1, "on": True}
    await presence.set_state("doc", "alice", state)
    assert await presence.roster("doc") == [
        PresenceEntry("alice", "Alice", state),
        PresenceEntry("bob", "Bob", None),
    ]
    await presence.set_state("doc", "alice", [1, None, "two"])
    await presence.set_state("doc", "bob", "away")
    assert await presence.roster("doc") == [
        PresenceEntry("alice", "Alice", [1, None, "two"]),
        PresenceEntry("bob", "Bob", "away"),
    ]
    await presence.set_state("doc", "alice", None)
    assert (await presence.roster("doc"))[0] == PresenceEntry("alice", "Alice", None)


async def test_state_is_per_document_and_leaves_with_the_user(presence: PresenceStore) -> None:
    await presence.join("d1", "alice", "Alice", "c1")
    await presence.join("d2", "alice", "Alice", "c1")
    await presence.set_state("d1", "alice", {"cursor": 1})
    assert await presence.roster("d2") == [PresenceEntry("alice", "Alice", None)]
    await presence.join("d1", "alice", "Alice", "c2")
    await presence.leave("d1", "alice", "c1")
    # Not the last connection: the state stays.
    assert await presence.roster("d1") == [PresenceEntry("alice", "Alice", {"cursor": 1})]
    await presence.leave("d1", "alice", "c2")
    await presence.join("d1", "alice", "Alice", "c3")
    assert await presence.roster("d1") == [PresenceEntry("alice", "Alice", None)]


async def test_state_of_an_absent_user_is_ignored(presence: PresenceStore) -> None:
    await presence.set_state("doc", "ghost", {"cursor": 1})
    assert await presence.roster("doc") == []
    await presence.join("doc", "ghost", "Ghost", "c1")
    assert await presence.roster("doc") == [PresenceEntry("ghost", "Ghost", None)]


async def test_roster_is_sorted_by_user_id(presence: PresenceStore) -> None:
    ids = ["zoe", "Zed", "bob", "élodie", "alice", "10", "9", "", "ångström"]
    for i, uid in enumerate(ids):
        await presence.join("doc", uid, uid.upper(), f"c{i}")
    assert users(await presence.roster("doc")) == sorted(ids)


async def test_documents_and_users_with_odd_ids(presence: PresenceStore) -> None:
    for i, doc in enumerate(ODD_IDS):
        assert await presence.join(doc, doc, f"name {i}", f"conn {doc}")
        assert await presence.join(doc, "plain", "Plain", "c")
        await presence.set_state(doc, doc, {"doc": doc})
    for i, doc in enumerate(ODD_IDS):
        expected = sorted(
            [PresenceEntry(doc, f"name {i}", {"doc": doc}), PresenceEntry("plain", "Plain")],
            key=lambda e: e.user_id,
        )
        assert await presence.roster(doc) == expected
    for doc in ODD_IDS:
        assert await presence.leave(doc, doc, f"conn {doc}")
        assert await presence.leave(doc, "plain", "c")
        assert await presence.roster(doc) == []


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(("join", "leave", "state")),
            st.sampled_from(("d1", "d2")),
            st.sampled_from(("u1", "u2", "u3")),
            st.sampled_from(("c1", "c2", "c3")),
            st.integers(min_value=0, max_value=3),
        ),
        max_size=40,
    )
)
async def test_random_operations_match_a_model(
    presence: PresenceStore, ops: list[tuple[str, str, str, str, int]]
) -> None:
    # One store for every example; each example gets documents of its own.
    run = uuid.uuid4().hex + ":"
    model: dict[str, dict[str, tuple[str, set[str], Any]]] = {}
    for kind, doc_name, user, conn, n in ops:
        doc = run + doc_name
        users_in_doc = model.setdefault(doc, {})
        if kind == "join":
            expected = user not in users_in_doc
            name, conns, state = users_in_doc.get(user, (f"{user} #{n}", set(), None))
            users_in_doc[user] = (name, conns | {conn}, state)
            assert await presence.join(doc, user, f"{user} #{n}", conn) is expected
        elif kind == "leave":
            entry = users_in_doc.get(user)
            expected = entry is not None and entry[1] == {conn}
            if entry is not None and conn in entry[1]:
                if expected:
                    del users_in_doc[user]
                else:
                    users_in_doc[user] = (entry[0], entry[1] - {conn}, entry[2])
            assert await presence.leave(doc, user, conn) is expected
        else:
            if user in users_in_doc:
                name, conns, _ = users_in_doc[user]
                users_in_doc[user] = (name, conns, {"n": n})
            await presence.set_state(doc, user, {"n": n})
    for doc, users_in_doc in model.items():
        assert await presence.roster(doc) == [
            PresenceEntry(uid, name, state)
            for uid, (name, _, state) in sorted(users_in_doc.items())
        ]
        for uid, (_, conns, _) in users_in_doc.items():  # tidy up for the next example
            for conn in conns:
                await presence.leave(doc, uid, conn)


# --- Redis: configuration and lifecycle ---------------------------------------------


async def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ConfigError):
        RedisPresence(REDIS_URL, instance_id="", ttl=1.0)
    with pytest.raises(ConfigError):
        RedisPresence(REDIS_URL, instance_id="a", ttl=0)


async def test_use_outside_start_and_stop_is_a_local_error(instances: Instances) -> None:
    a = instances.make("A")
    with pytest.raises(LocalError):
        await a.join("doc", "alice", "Alice", "c1")
    with pytest.raises(LocalError):
        await a.reap()
    assert await a.stop() == []  # stopping what never started is harmless
    await a.start()
    with pytest.raises(LocalError):
        await a.start()
    assert await a.join("doc", "alice", "Alice", "c1")
    assert await a.stop() == [("doc", "alice")]
    assert await a.stop() == []
    with pytest.raises(LocalError):
        await a.roster("doc")


async def test_unreachable_redis_fails_start() -> None:
    p = RedisPresence("redis://127.0.0.1:1/0", instance_id="A")
    with pytest.raises(RedisError):
        await asyncio.wait_for(p.start(), WAIT)
    with pytest.raises(LocalError):
        await p.roster("doc")
    assert await p.stop() == []


async def test_stop_during_a_heartbeat_ends_it(instances: Instances) -> None:
    """Stopping at any moment of a beat ends the heartbeat (a cancellation that
    hits a command as it completes must not leave the task beating forever)."""
    for i in range(40):
        p = await instances.start(f"S{i}", ttl=0.015)  # a beat every 5 ms
        await asyncio.sleep((i % 10) / 1000)
        done, _ = await asyncio.wait({asyncio.ensure_future(p.stop())}, timeout=WAIT)
        assert done, f"stop() of instance {i} did not return"
    assert await instances.keys() == set()


async def test_nothing_is_kept_for_documents_nobody_is_in(instances: Instances) -> None:
    a = await instances.start("A", ttl=30.0)
    for doc in ("d1", "d2", *ODD_IDS[:4]):
        await a.join(doc, "alice", "Alice", "c1")
        await a.join(doc, "bob", "Bob", "c2")
        await a.set_state(doc, "alice", {"x": 1})
        await a.leave(doc, "alice", "c1")
        await a.leave(doc, "bob", "c2")
    base = instances.prefix + "presence:"
    # Only the instance's own registration is left.
    assert await instances.keys() == {base + "instances", base + "alive:A"}
    await a.join("d1", "alice", "Alice", "c1")
    await a.stop()
    assert await instances.keys() == set()


# --- Redis: several instances ------------------------------------------------------------


async def test_two_instances_share_one_roster(instances: Instances) -> None:
    a, b = await instances.start("A"), await instances.start("B")
    assert await a.join("doc", "alice", "Alice", "a1")
    assert await b.join("doc", "bob", "Bob", "b1")
    await b.set_state("doc", "alice", {"seen by": "B"})
    await a.set_state("doc", "bob", "away")
    expected = [
        PresenceEntry("alice", "Alice", {"seen by": "B"}),
        PresenceEntry("bob", "Bob", "away"),
    ]
    assert await a.roster("doc") == expected
    assert await b.roster("doc") == expected
    # A connection is left through the instance that holds it.
    assert not await b.leave("doc", "alice", "a1")
    assert await a.leave("doc", "alice", "a1")
    assert users(await b.roster("doc")) == ["bob"]


async def test_tabs_on_several_instances_join_and_leave_once(instances: Instances) -> None:
    group = [await instances.start(name) for name in ("A", "B", "C")]
    for round_ in range(5):
        tabs = [(p, f"{p.instance_id}-{round_}-{t}") for p in group for t in range(3)]
        joined = await asyncio.gather(*(p.join("doc", "alice", "Alice", c) for p, c in tabs))
        assert sorted(joined) == [False] * (len(tabs) - 1) + [True]
        assert users(await group[2].roster("doc")) == ["alice"]
        left = await asyncio.gather(*(p.leave("doc", "alice", c) for p, c in tabs))
        assert sorted(left) == [False] * (len(tabs) - 1) + [True]
        assert await group[0].roster("doc") == []


async def test_a_live_instance_is_never_reaped(instances: Instances) -> None:
    a, b = await instances.start("A"), await instances.start("B")
    await a.join("doc", "alice", "Alice", "a1")
    deadline = time.monotonic() + 3 * SHORT_TTL
    while time.monotonic() < deadline:
        assert await b.reap() == []
        await asyncio.sleep(SHORT_TTL / 4)
    assert users(await b.roster("doc")) == ["alice"]


async def test_stop_says_goodbye_at_once(instances: Instances) -> None:
    a, b = await instances.start("A", ttl=30.0), await instances.start("B", ttl=30.0)
    await a.join("d1", "alice", "Alice", "a1")
    await a.join("d1", "alice", "Alice", "a2")
    await a.join("d2", "alice", "Alice", "a1")
    await a.join("d1", "carol", "Carol", "a3")
    await b.join("d1", "carol", "Carol", "b1")  # carol stays through B
    await a.set_state("d1", "carol", {"cursor": 7})
    assert sorted(await a.stop()) == [("d1", "alice"), ("d2", "alice")]
    assert await b.roster("d1") == [PresenceEntry("carol", "Carol", {"cursor": 7})]
    assert await b.roster("d2") == []
    assert await b.reap() == []
    assert await b.leave("d1", "carol", "b1")


# --- Redis: instance death ------------------------------------------------------------

#: A presence instance in a child process: joins what it is told, says "ready",
#: then waits to be killed.
CHILD = """
import asyncio, json, sys
from cowrite.backends.presence_redis import RedisPresence

async def main() -> None:
    url, prefix, instance_id, ttl, joins = sys.argv[1:6]
    p = RedisPresence(url, instance_id=instance_id, ttl=float(ttl), prefix=prefix)
    await p.start()
    for doc, user, conn in json.loads(joins):
        await p.join(doc, user, user.title(), conn)
    print("ready", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def start_child(
    instances: Instances, instance_id: str, joins: list[tuple[str, str, str]]
) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        REDIS_URL,
        instances.prefix,
        instance_id,
        str(SHORT_TTL),
        json.dumps(joins),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 4 * WAIT)
        assert line == b"ready\n", line
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return proc


async def kill(proc: asyncio.subprocess.Process) -> None:
    proc.kill()
    await asyncio.wait_for(proc.wait(), WAIT)


async def test_a_dead_instance_is_reaped_exactly_once(instances: Instances) -> None:
    b, c = await instances.start("B"), await instances.start("C")
    await b.join("d1", "carol", "Carol", "b1")  # carol has tabs on A and B
    odd = ODD_IDS[9]
    child = await start_child(
        instances,
        "A",
        [
            ("d1", "alice", "a1"),
            ("d2", "alice", "a1"),
            ("d1", "bob", "a2"),
            ("d1", "bob", "a3"),  # two tabs on A: reported once
            ("d1", "carol", "a4"),
            (odd, "dave", "a5"),
        ],
    )
    assert users(await c.roster("d1")) == ["alice", "bob", "carol"]
    await kill(child)
    killed = time.monotonic()
    # Until the liveness key expires, A's users stay.
    assert users(await b.roster("d1")) == ["alice", "bob", "carol"]

    reaped: list[list[tuple[str, str]]] = []
    while time.monotonic() < killed + SHORT_TTL + WAIT:
        results = await asyncio.gather(b.reap(), c.reap(), b.reap())
        reaped += [r for r in results if r]
        if reaped:
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("the dead instance was not reaped")
    assert time.monotonic() - killed <= SHORT_TTL + 1.0
    # Later rounds find nothing more.
    for _ in range(3):
        assert list(await asyncio.gather(b.reap(), c.reap())) == [[], []]
    assert len(reaped) == 1
    assert sorted(reaped[0]) == [("d1", "alice"), ("d1", "bob"), ("d2", "alice"), (odd, "dave")]
    assert await b.roster("d1") == [PresenceEntry("carol", "Carol")]
    assert await c.roster("d2") == []
    assert await c.roster(odd) == []
    assert await b.leave("d1", "carol", "b1")


async def test_a_stalled_instance_is_reaped_and_announces_nothing_twice(
    instances: Instances, caplog: pytest.LogCaptureFixture
) -> None:
    """An instance whose heartbeat stopped for longer than ttl (simulated by
    deleting its liveness key) is reaped like a dead one; when it resumes, its
    leaves for reaped connections are no-ops and it keeps working."""
    a, b = await instances.start("A"), await instances.start("B")
    await a.join("doc", "alice", "Alice", "a1")
    await a.join("doc", "bob", "Bob", "a2")
    await b.join("doc", "bob", "Bob", "b1")
    caplog.set_level(logging.WARNING, logger="cowrite.presence")
    # A's heartbeat may recreate the key between the delete and the reap; retry then.
    for _ in range(10):
        await instances.raw.delete(instances.prefix + "presence:alive:A")
        reaped = await b.reap()
        if reaped:
            break
    assert reaped == [("doc", "alice")]
    assert not await a.leave("doc", "alice", "a1")
    assert not await a.leave("doc", "bob", "a2")
    assert users(await a.roster("doc")) == ["bob"]

    async def warned() -> bool:
        return any("had expired" in r.getMessage() for r in caplog.records)

    await eventually(warned)
    # The heartbeat brought A back: its new connections count and are not reaped.
    assert await a.join("doc", "alice", "Alice", "a3")
    assert await b.reap() == []
    assert sorted(await a.stop()) == [("doc", "alice")]
