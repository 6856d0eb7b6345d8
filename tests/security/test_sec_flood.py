"""Floods: one client over its edit rate, one address opening connections in a
loop, an instance at its connection cap.  The abuser is slowed, refused or
disconnected; everyone else keeps working and nothing acknowledged is lost.
Also: the Origin allow-list (cross-site WebSocket hijacking)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from e2e_support import PyClient, read_all
from sec_support import (
    EIO_PATH,
    POLL_PATH,
    WAIT,
    Closed,
    ErrorRecords,
    RawSio,
    Refused,
    Running,
    live_state,
    open_ws,
    token,
    wait_state,
)

MakeApp = Callable[..., Awaitable[Running]]


async def edits(client: PyClient, doc: str, prefix: str, count: int, pause: float) -> list[int]:
    """``count`` edits, one at a time; returns the acknowledged seqs."""
    seqs = []
    for i in range(count):
        ack = await client.call(
            "edit-operation",
            {"documentId": doc, "operation": {"i": i}, "clientOpId": f"{prefix}{i}"},
        )
        assert ack["ok"], f"{prefix}{i}: {ack}"
        seqs.append(ack["seq"])
        await asyncio.sleep(pause)
    return seqs


def check_stored(ops: list[dict[str, Any]], acked: dict[str, int]) -> None:
    """Every acknowledged (clientOpId -> seq) is in the log, once, at its seq."""
    by_seq = {op["seq"]: op["clientOpId"] for op in ops}
    assert sorted(by_seq) == list(range(1, len(ops) + 1)), "the log has holes"
    lost = {c: s for c, s in acked.items() if by_seq.get(s) != c}
    assert not lost, f"acknowledged but not stored as acknowledged: {lost}"


async def test_edit_flood_is_rate_limited_then_disconnected(
    make_app: MakeApp, error_log: ErrorRecords
) -> None:
    app = await make_app(
        collab={"edit_rate": 20, "edit_burst": 20, "flood_refusals": 30, "flood_window": 10.0}
    )
    doc = "flooded"
    good = PyClient("good", ["websocket"])
    try:
        await good.connect_ok(app.url, token("owner"))
        assert (await good.call("join-document", {"documentId": doc}))["ok"]
        for user in ("flooder",):
            ack = await good.call(
                "share-document", {"documentId": doc, "userId": user, "role": "editor"}
            )
            assert ack["ok"], ack
        flooder = await RawSio.open(app.port)
        await flooder.connect_ok("flooder")
        assert (await flooder.call("join-document", {"documentId": doc}))["ok"]

        async def flood() -> tuple[dict[str, int], list[dict[str, Any]], bool]:
            ids = [
                flooder.emit(
                    "edit-operation",
                    {"documentId": doc, "operation": {"f": i}, "clientOpId": f"f{i}"},
                )
                for i in range(200)
            ]
            # Read until the server disconnects it from the namespace (a
            # DISCONNECT packet, "41", sent once the accepted edits are acked),
            # at most WAIT seconds.  A quiet half second is not the end: on a
            # loaded machine the accepted edits' commit can take longer (a
            # 0.5 s silence ended the reading before their acks: "0 flood
            # edits accepted").
            with contextlib.suppress(Closed, TimeoutError):
                async with asyncio.timeout(WAIT):
                    while "1" not in flooder.packets or len(flooder.acks) < len(ids):
                        try:
                            flooder._take(await flooder.ws.recv(timeout=0.5))
                        except TimeoutError:
                            if "1" in flooder.packets:
                                break  # disconnected and quiet: the rest is never acked
            acked: dict[str, int] = {}
            refusals: list[dict[str, Any]] = []
            for i, ack_id in enumerate(ids):
                ack = flooder.acks.get(ack_id, [None])[0]
                if ack is None:
                    continue
                if ack["ok"]:
                    acked[f"f{i}"] = ack["seq"]
                else:
                    refusals.append(ack["error"])
            return acked, refusals, "1" in flooder.packets

        flood_task = asyncio.create_task(flood())
        good_seqs = await edits(good, doc, "g", 30, 0.06)  # ~16/s, under its own limit
        flood_acked, refusals, disconnected = await flood_task

        assert 0 < len(flood_acked) <= 40, f"{len(flood_acked)} flood edits accepted"
        assert refusals, "the flood was never refused"
        for err in refusals:
            assert err["code"] == "rate_limited", err
            assert isinstance(err["retryAfter"], int | float) and err["retryAfter"] > 0, err
        assert disconnected, "the flooding client was not disconnected"
        flood_disconnects = app.app.service.flood_disconnects
        assert flood_disconnects == 1, f"one client, counted {flood_disconnects} times"

        ops = await read_all(good, doc)
        acked = {**flood_acked, **{f"g{i}": s for i, s in enumerate(good_seqs)}}
        check_stored(ops, acked)
        assert len(ops) == len(acked), "stored operations that were never acknowledged"
        error_log.check()
    finally:
        await good.close()


async def test_connection_loop_from_one_address_is_refused_before_any_session(
    make_app: MakeApp, error_log: ErrorRecords
) -> None:
    """Clients' addresses come from X-Forwarded-For (loopback is a trusted proxy)."""
    app = await make_app(
        server={
            "per_ip_exempt": (),
            "per_ip_rate": 2.0,
            "per_ip_burst": 5,
            "trusted_proxies": ("127.0.0.1/32",),
        }
    )
    other = {"X-Forwarded-For": "198.51.100.1"}
    bad = {"X-Forwarded-For": "203.0.113.7"}
    good = await RawSio.open(app.port, headers=other)
    await good.connect_ok("good")
    assert (await good.call("join-document", {"documentId": "d"}))["ok"]
    base = live_state(app)

    opened: list[RawSio] = []
    refused: list[Refused] = []
    for i in range(60):
        try:
            opened.append(await RawSio.open(app.port, headers=bad))
        except Refused as exc:
            refused.append(exc)
            # Refused before any session state: the table did not grow.
            assert len(app.engine.sessions) == base["engine.sessions"] + len(opened)
        if i % 10 == 0:  # meanwhile the established client keeps editing
            ack = await good.call(
                "edit-operation", {"documentId": "d", "operation": i, "clientOpId": f"g{i}"}
            )
            assert ack["ok"], ack
    assert 5 <= len(opened) <= 10, f"{len(opened)} admitted"
    assert len(refused) == 60 - len(opened)
    for exc in refused:
        assert exc.status == 429, exc
        assert int(exc.headers["retry-after"]) >= 1
    # Polling handshakes from that address are refused the same way.
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{app.url}{POLL_PATH}", headers=bad) as res:
            assert res.status == 429 and res.headers["Retry-After"]
        # Another address is not affected.
        async with http.get(
            f"{app.url}{POLL_PATH}", headers={"X-Forwarded-For": "192.0.2.9"}
        ) as res:
            assert res.status == 200
    newcomer = await RawSio.open(app.port, headers={"X-Forwarded-For": "192.0.2.10"})
    await newcomer.connect_ok("newcomer")
    for sio in [*opened, newcomer]:
        sio.ws.abort()
    await wait_state(
        app,
        {
            **base,
            "engine.sessions": base["engine.sessions"] + 1,
            "admission.total": base["admission.total"] + 1,
            "admission.handshaking": 1,
            "admission.per_ip": 2,
        },
    )
    error_log.check()


async def test_instance_at_its_connection_cap_answers_503(
    make_app: MakeApp, error_log: ErrorRecords
) -> None:
    cap = 6
    app = await make_app(server={"max_connections": cap})
    doc = "capped"
    alice, bob = PyClient("alice", ["websocket"]), PyClient("bob", ["polling"])
    fillers: list[RawSio] = []
    try:
        await alice.connect_ok(app.url, token("alice"))
        assert (await alice.call("join-document", {"documentId": doc}))["ok"]
        ack = await alice.call(
            "share-document", {"documentId": doc, "userId": "bob", "role": "editor"}
        )
        assert ack["ok"]
        await bob.connect_ok(app.url, token("bob"))
        assert (await bob.call("join-document", {"documentId": doc}))["ok"]
        while len(app.engine.sessions) < cap:
            fillers.append(await RawSio.open(app.port))
        sessions = len(app.engine.sessions)
        with pytest.raises(Refused) as refused:
            await open_ws(app.port, EIO_PATH)
        assert refused.value.status == 503
        assert int(refused.value.headers["retry-after"]) >= 1
        async with aiohttp.ClientSession() as http, http.get(f"{app.url}{POLL_PATH}") as res:
            assert res.status == 503 and int(res.headers["Retry-After"]) >= 1
            assert orjson.loads(await res.read())["code"] == 3
        assert len(app.engine.sessions) == sessions == cap
        # The connected clients keep editing at the cap, both transports.
        a_seqs, b_seqs = await asyncio.gather(
            edits(alice, doc, "a", 20, 0.0), edits(bob, doc, "b", 20, 0.0)
        )
        ops = await read_all(bob, doc)
        check_stored(
            ops,
            {
                **{f"a{i}": s for i, s in enumerate(a_seqs)},
                **{f"b{i}": s for i, s in enumerate(b_seqs)},
            },
        )
        # A freed slot is usable again.
        fillers.pop().ws.abort()
        async with asyncio.timeout(WAIT):
            while len(app.engine.sessions) >= cap:
                await asyncio.sleep(0.01)
        fillers.append(await RawSio.open(app.port))
        error_log.check()
    finally:
        for sio in fillers:
            sio.ws.abort()
        await alice.close()
        await bob.close()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_foreign_origin_is_refused(make_app: MakeApp, transport: str) -> None:
    app = await make_app()  # allow-list: http://allowed.example
    base = live_state(app)
    evil = {"Origin": "http://evil.example"}
    if transport == "websocket":
        with pytest.raises(Refused) as refused:
            await open_ws(app.port, EIO_PATH, headers=evil)
        status, headers = refused.value.status, refused.value.headers
    else:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{app.url}{POLL_PATH}", headers=evil) as res,
        ):
            status, headers = res.status, {k.lower(): v for k, v in res.headers.items()}
    assert status == 403
    assert "access-control-allow-origin" not in headers
    assert live_state(app) == base, "a session was allocated for a foreign origin"
    # The listed origin is accepted.
    sio = await RawSio.open(app.port, headers={"Origin": "http://allowed.example"})
    await sio.connect_ok("allowed")
    sio.ws.abort()
