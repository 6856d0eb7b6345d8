"""The collaboration service with a recording gateway and a real SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from collab_support import SECRET, CountsPageReads, RecordingGateway

from cowrite.auth import AuthSettings, TokenVerifier, mint_token
from cowrite.backends.broker_memory import MemoryBroker
from cowrite.backends.presence_memory import MemoryPresence
from cowrite.backends.store import Role, StoreError
from cowrite.backends.store_sqlite import SqliteStore
from cowrite.core.service import CollabService
from cowrite.core.settings import CollabSettings


async def open_service(
    path: Path, settings: CollabSettings, **options: Any
) -> tuple[CollabService, RecordingGateway, SqliteStore]:
    """A started service on a fresh SQLite file; stop it with ``close_service``."""
    store = SqliteStore(path)
    await store.open()
    gateway = RecordingGateway()
    svc = CollabService(
        store=store,
        presence=MemoryPresence(),
        gateway=gateway,
        verifier=TokenVerifier(AuthSettings(secret=SECRET)),
        broker=MemoryBroker(),
        settings=settings,
        **options,
    )
    await svc.start()
    return svc, gateway, store


async def close_service(svc: CollabService, store: SqliteStore) -> None:
    await svc.stop()
    await store.close()


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[CollabService, RecordingGateway]]:
    svc, gateway, store = await open_service(
        tmp_path / "db.sqlite", CollabSettings(page_size=5, presence_interval=0.01)
    )
    yield svc, gateway
    await close_service(svc, store)


def connect(svc: CollabService, sid: str, user: str) -> None:
    token = mint_token(AuthSettings(secret=SECRET), user_id=user, name=user.upper())
    svc.connect(sid, {"token": token})


async def test_owner_edit_reaches_others_not_sender(service: Any) -> None:
    svc, gw = service
    connect(svc, "a", "alice")
    connect(svc, "b", "bob")
    assert (await svc.join("a", "d"))["role"] == "owner"
    assert (await svc.share("a", {"documentId": "d", "userId": "bob", "role": "editor"}))["ok"]
    ack = await svc.join("b", {"documentId": "d", "since": 0})
    assert ack["ok"] and ack["role"] == "editor"
    await asyncio.sleep(0)
    res = await svc.edit("a", {"documentId": "d", "operation": [1], "clientOpId": "c1"})
    assert res == {"ok": True, "documentId": "d", "seq": 1}
    assert [e["seq"] for e in gw.events("b", "remote-edit")] == [1]
    assert gw.events("a", "remote-edit") == []
    assert gw.events("a", "user-joined") == [{"documentId": "d", "userId": "bob", "name": "BOB"}]


async def test_catch_up_boundary_has_no_gap_or_duplicate(service: Any) -> None:
    """Operations committed while a member is paging arrive once, in order, after its pages."""
    svc, gw = service
    connect(svc, "w", "writer")
    await svc.join("w", "d")
    for i in range(12):
        await svc.edit("w", {"documentId": "d", "operation": i, "clientOpId": f"w{i}"})
    connect(svc, "r", "writer")  # another tab of the same user
    first = await svc.join("r", {"documentId": "d", "since": 0})
    seen = [op["seq"] for op in first["ops"]]
    assert first["more"] is True and seen == [1, 2, 3, 4, 5]
    # Live operations arrive while the reader is still paging.
    edits = [
        svc.edit("w", {"documentId": "d", "operation": i, "clientOpId": f"late{i}"})
        for i in range(3)
    ]
    await asyncio.gather(*edits)
    assert gw.events("r", "remote-edit") == []  # held until caught up
    since = seen[-1]
    while True:
        page = await svc.sync("r", {"documentId": "d", "since": since, "limit": 5})
        seen += [op["seq"] for op in page["ops"]]
        since = seen[-1]
        if not page["more"]:
            break
    await asyncio.sleep(0)
    seen += [e["seq"] for e in gw.events("r", "remote-edit")]
    assert seen == list(range(1, 16))


async def test_idempotent_resend_and_errors(service: Any) -> None:
    svc, _gw = service
    connect(svc, "a", "alice")
    assert (await svc.edit("a", {"documentId": "d", "operation": 1}))["error"][
        "code"
    ] == "not_joined"
    await svc.join("a", "d")
    one = await svc.edit("a", {"documentId": "d", "operation": 1, "clientOpId": "x"})
    two = await svc.edit("a", {"documentId": "d", "operation": 1, "clientOpId": "x"})
    assert one["seq"] == two["seq"] == 1 and two["duplicate"] is True
    big = await svc.edit("a", {"documentId": "d", "operation": "x" * 70_000, "clientOpId": "y"})
    assert big["error"]["code"] == "payload_too_large"
    bad = await svc.edit("a", {"documentId": "d", "operation": {1: 2}, "clientOpId": "z"})
    assert bad["error"]["code"] == "invalid_payload"
    assert (await svc.edit("a", ["nope"]))["error"]["code"] == "invalid_payload"


async def test_viewer_is_read_only_and_revocation_removes(service: Any) -> None:
    svc, gw = service
    connect(svc, "o", "owner")
    connect(svc, "v", "viewer")
    await svc.join("o", "d")
    denied = await svc.join("v", "d")
    assert denied["error"]["code"] == "access_denied"
    assert ("error", ("Access denied",)) in gw.sent["v"]
    await svc.share("o", {"documentId": "d", "userId": "viewer", "role": "viewer"})
    await svc.join("v", "d")
    ro = await svc.edit("v", {"documentId": "d", "operation": 1})
    assert ro["error"]["code"] == "read_only"
    await svc.share("o", {"documentId": "d", "userId": "viewer", "role": None})
    assert gw.events("v", "access-revoked") == [{"documentId": "d"}]
    assert gw.events("o", "user-left") == [{"documentId": "d", "userId": "viewer"}]


async def test_multi_tab_presence_counts_once(service: Any) -> None:
    svc, gw = service
    connect(svc, "o", "owner")
    await svc.join("o", "d")
    await svc.share("o", {"documentId": "d", "userId": "bob", "role": "editor"})
    connect(svc, "b1", "bob")
    connect(svc, "b2", "bob")
    await svc.join("b1", "d")
    await svc.join("b2", "d")
    assert len(gw.events("o", "user-joined")) == 1
    await svc.leave("b1", "d")
    assert gw.events("o", "user-left") == []
    await svc.disconnect("b2")
    assert gw.events("o", "user-left") == [{"documentId": "d", "userId": "bob"}]


async def test_presence_is_coalesced(service: Any) -> None:
    svc, gw = service
    connect(svc, "o", "owner")
    connect(svc, "o2", "owner")
    await svc.join("o", "d")
    await svc.join("o2", "d")
    for i in range(50):
        await svc.presence_update("o", {"documentId": "d", "state": {"cursor": i}})
    await asyncio.sleep(0.1)
    got = gw.events("o2", "presence")
    assert 1 <= len(got) < 10
    assert got[-1] == {"documentId": "d", "userId": "owner", "state": {"cursor": 49}}


async def test_rate_limit_and_flood_disconnect(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "rl.sqlite")
    await store.open()
    gw = RecordingGateway()
    now = [0.0]
    svc = CollabService(
        store=store,
        presence=MemoryPresence(),
        gateway=gw,
        verifier=TokenVerifier(AuthSettings(secret=SECRET)),
        broker=MemoryBroker(),
        settings=CollabSettings(edit_rate=1, edit_burst=2, flood_refusals=5, flood_window=10),
        clock=lambda: now[0],
    )
    await svc.start()
    try:
        connect(svc, "a", "alice")
        await svc.join("a", "d")
        acks = [await svc.edit("a", {"documentId": "d", "operation": i}) for i in range(4)]
        assert [a["ok"] for a in acks] == [True, True, False, False]
        assert acks[2]["error"]["code"] == "rate_limited"
        assert 0 < acks[2]["error"]["retryAfter"] <= 1
        now[0] = 1.0
        assert (await svc.edit("a", {"documentId": "d", "operation": 9}))["ok"]
        for _ in range(5):
            await svc.edit("a", {"documentId": "d", "operation": 0})
        assert ("__disconnect__", ()) in gw.sent["a"]
    finally:
        await svc.stop()
        await store.close()


async def test_stored_roles_of_editors_are_refreshed_in_the_background(tmp_path: Path) -> None:
    """A role changed in the store behind the service's back (``cowrite
    revoke``/``grant``) reaches an editing member within role_cache_seconds,
    through the background refresher: edits never wait for a role query."""
    svc, gw, store = await open_service(
        tmp_path / "roles.sqlite", CollabSettings(role_cache_seconds=0.4)
    )
    try:
        connect(svc, "a", "alice")
        connect(svc, "b", "bob")
        await svc.join("a", "d")
        await store.set_role("d", "bob", Role.EDITOR)
        assert (await svc.join("b", "d"))["role"] == "editor"
        reads = 0
        original = store.list_roles

        async def counting(document_id: str) -> dict[str, Role]:
            nonlocal reads
            reads += 1
            return await original(document_id)

        store.list_roles = counting  # type: ignore[method-assign]
        # Edits keep the role fresh: the refresher re-reads it before it is stale.
        for i in range(8):
            assert (await svc.edit("b", {"documentId": "d", "operation": i}))["ok"]
            await asyncio.sleep(0.1)
        assert reads >= 1
        # Demoted in the store: the next refresh makes bob a viewer.
        await store.set_role("d", "bob", Role.VIEWER)
        for _ in range(30):
            ack = await svc.edit("b", {"documentId": "d", "operation": "x"})
            if not ack["ok"]:
                break
            await asyncio.sleep(0.05)
        assert ack["error"]["code"] == "read_only"
        # Revoked in the store: bob leaves the document.
        await store.set_role("d", "bob", Role.EDITOR)
        await asyncio.sleep(0.5)
        await svc.edit("b", {"documentId": "d", "operation": "y"})
        await store.revoke("d", "bob")
        for _ in range(30):
            if gw.events("b", "access-revoked"):
                break
            await svc.edit("b", {"documentId": "d", "operation": "z"})
            await asyncio.sleep(0.05)
        assert gw.events("b", "access-revoked") == [{"documentId": "d"}]
    finally:
        await close_service(svc, store)


class CountingStore(CountsPageReads, SqliteStore):
    """The real SQLite store, counting ``create_documents`` and ``read_pages``
    calls; it fails the creations while ``failing`` is set."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.create_calls: list[list[tuple[str, str]]] = []
        self.failing = False

    async def create_documents(self, documents: Any) -> set[str]:
        self.create_calls.append(list(documents))
        if self.failing:
            raise StoreError("the disk is on fire")
        return await super().create_documents(documents)


async def test_claim_joins_that_arrive_together_create_their_documents_in_one_call(
    tmp_path: Path,
) -> None:
    store = CountingStore(tmp_path / "db.sqlite")
    await store.open()
    auth = AuthSettings(secret=SECRET, docs_claim=True)
    svc = CollabService(
        store=store,
        presence=MemoryPresence(),
        gateway=RecordingGateway(),
        verifier=TokenVerifier(auth),
        broker=MemoryBroker(),
        settings=CollabSettings(docs_claim=True),
    )
    await svc.start()
    try:
        for i in range(12):
            docs = {f"d{i // 3}": "editor"}  # four documents, three members each
            svc.connect(f"s{i}", {"token": mint_token(auth, user_id=f"u{i}", docs=docs)})
        acks = await asyncio.gather(*(svc.join(f"s{i}", f"d{i // 3}") for i in range(12)))
        assert [a.get("role") for a in acks] == ["editor"] * 12, acks[:2]
        # The first runs at once; the three that arrive meanwhile share one call.
        assert [sorted(call) for call in store.create_calls] == [
            [("d0", "u0")],
            [("d1", "u3"), ("d2", "u6"), ("d3", "u9")],
        ]
        assert await store.list_roles("d2") == {"u6": Role.OWNER}
        # Known documents are not created again; a failed creation is an
        # ``unavailable`` ack for each join that waited on it, and the next join retries.
        store.failing = True
        svc.connect(
            "x", {"token": mint_token(auth, user_id="ux", docs={"d0": "editor", "e": "editor"})}
        )
        svc.connect("y", {"token": mint_token(auth, user_id="uy", docs={"e": "editor"})})
        assert (await svc.join("x", "d0"))["ok"]
        assert len(store.create_calls) == 2
        failed = await asyncio.gather(svc.join("x", "e"), svc.join("y", "e"))
        assert [a["error"]["code"] for a in failed] == ["unavailable", "unavailable"]
        store.failing = False
        assert (await svc.join("y", "e"))["ok"]
        assert await store.list_roles("e") == {"uy": Role.OWNER}
    finally:
        await svc.stop()
        await store.close()


async def test_a_join_at_the_rooms_head_reads_nothing_and_misses_nothing(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "db.sqlite")
    await store.open()
    auth = AuthSettings(secret=SECRET, docs_claim=True)
    gw = RecordingGateway()
    svc = claim_service(store, gw, auth, MemoryPresence())
    await svc.start()
    try:
        for sid in ("w", "a", "b", "c"):
            svc.connect(sid, {"token": mint_token(auth, user_id=sid, docs={"d": "editor"})})
        assert (await svc.join("w", "d"))["head"] == 0
        assert store.page_reads == [[("d", 0, 0)]]  # the room's head, when it opened
        for i in range(2):
            await svc.edit("w", {"documentId": "d", "operation": i, "clientOpId": f"w{i}"})
        # At the head: no read, an empty page.
        ack = await svc.join("a", {"documentId": "d", "since": 2})
        assert (ack["head"], ack["ops"], ack["more"]) == (2, [], False)
        assert len(store.page_reads) == 1
        # Behind it: the page from the log.
        ack = await svc.join("b", {"documentId": "d", "since": 1})
        assert [op["seq"] for op in ack["ops"]] == [2] and len(store.page_reads) == 2
        # An edit committed while a join at the head is under way arrives
        # once: in the page or, held until the ack, as a remote-edit.
        ack, _ = await asyncio.gather(
            svc.join("c", {"documentId": "d", "since": 2}),
            svc.edit("w", {"documentId": "d", "operation": 2, "clientOpId": "w2"}),
        )
        await asyncio.sleep(0)
        for sid in ("a", "b"):
            assert [e["seq"] for e in gw.events(sid, "remote-edit")] == [3], sid
        seen = [op["seq"] for op in ack["ops"]] + [e["seq"] for e in gw.events("c", "remote-edit")]
        assert seen == [3]
    finally:
        await svc.stop()
        await store.close()


def claim_service(
    store: SqliteStore, gw: RecordingGateway, auth: AuthSettings, presence: MemoryPresence
) -> CollabService:
    """A service whose tokens grant documents (the ``docs`` claim)."""
    return CollabService(
        store=store,
        presence=presence,
        gateway=gw,
        verifier=TokenVerifier(auth),
        broker=MemoryBroker(),
        settings=CollabSettings(docs_claim=True),
    )


class SlowLeavePresence(MemoryPresence):
    """MemoryPresence whose leave_many takes a moment (a remote store's round
    trip) and records each call's size."""

    def __init__(self) -> None:
        super().__init__()
        self.leave_calls: list[int] = []

    async def leave_many(self, leaves: Any) -> list[bool]:
        self.leave_calls.append(len(leaves))
        await asyncio.sleep(0.01)
        return await super().leave_many(leaves)


@pytest.fixture
async def slow_leaves(
    tmp_path: Path,
) -> AsyncIterator[tuple[CollabService, SlowLeavePresence, RecordingGateway]]:
    """A started claim-granting service on SlowLeavePresence; "w" and s0-s11
    (users u0-u11) have joined document "d"."""
    store = SqliteStore(tmp_path / "db.sqlite")
    await store.open()
    auth = AuthSettings(secret=SECRET, docs_claim=True)
    presence = SlowLeavePresence()
    gw = RecordingGateway()
    svc = claim_service(store, gw, auth, presence)
    await svc.start()
    try:
        users = [("w", "w")] + [(f"s{i}", f"u{i}") for i in range(12)]
        for sid, user in users:
            svc.connect(sid, {"token": mint_token(auth, user_id=user, docs={"d": "editor"})})
            assert (await svc.join(sid, "d"))["ok"]
        yield svc, presence, gw
    finally:
        await svc.stop()
        await store.close()


async def test_leaves_that_arrive_together_share_one_presence_call(
    slow_leaves: tuple[CollabService, SlowLeavePresence, RecordingGateway],
) -> None:
    svc, presence, gw = slow_leaves
    # A mass disconnect: the first leave runs at once, the rest share one call.
    await asyncio.gather(*(svc.disconnect(f"s{i}") for i in range(12)))
    assert presence.leave_calls == [1, 11]
    left = sorted(e["userId"] for e in gw.events("w", "user-left"))
    assert left == sorted(f"u{i}" for i in range(12))
    assert [e.user_id for e in await presence.roster("d")] == ["w"]


async def test_leaves_queued_when_the_instance_begins_to_go_away_make_no_call(
    slow_leaves: tuple[CollabService, SlowLeavePresence, RecordingGateway],
) -> None:
    svc, presence, _ = slow_leaves
    gone = [asyncio.ensure_future(svc.disconnect(f"s{i}")) for i in range(6)]
    await asyncio.sleep(0)  # the first leave's call is under way, the rest wait
    svc.begin_shutdown()
    await asyncio.gather(*gone)  # no failure for the ones that waited
    # They made no call: the goodbye (PresenceStore.stop) removes them.
    assert presence.leave_calls == [1]
    roster = [e.user_id for e in await presence.roster("d")]
    assert roster == sorted(["w"] + [f"u{i}" for i in range(1, 12)])
