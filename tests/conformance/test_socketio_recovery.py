"""``SocketServer.enable_recovery``: connection-state recovery at the protocol level.

Facts from socket.io (4.6+) and socket.io-client: with recovery on, the
CONNECT answer carries ``{"sid", "pid"}``; a client that lost its connection
sends ``{pid, offset}`` (merged into its auth) in its next CONNECT; a resumed
socket is answered with the same sid and pid (the client's
``socket.recovered`` is ``pid === previous pid``), anything else with a new
sid and a new pid.  Raw WebSocket clients against the ``sio`` fixture; the
application part (what was missed) is tests/e2e/test_e2e_recovery.py's.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(30)


class Restorer:
    """A ``restore`` hook: ``known`` resumes ``old-sid``; ``boom`` raises."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str | None, dict[str, Any]]] = []

    async def __call__(
        self, namespace: str, pid: str, offset: str | None, auth: dict[str, Any]
    ) -> str | None:
        self.calls.append((namespace, pid, offset, auth))
        if pid == "boom":
            raise RuntimeError("store down")
        return "old-sid" if pid == "known" else None


async def connect(sio: Any, payload: str) -> tuple[Any, dict[str, Any]]:
    socket = await sio.ws()
    assert (await socket.recv()).startswith("0")
    await socket.send("40" + payload)
    answer = await socket.recv()
    assert answer.startswith("40{"), answer
    return socket, json.loads(answer[2:])


@pytest.fixture
def restorer(sio: Any) -> Restorer:
    hook = Restorer()
    sio.server.enable_recovery(hook)
    return hook


async def test_every_socket_gets_a_private_id(sio: Any, restorer: Restorer) -> None:
    _socket, first = await connect(sio, '{"token":"t"}')
    _socket, second = await connect(sio, "")
    assert set(first) == set(second) == {"sid", "pid"}
    assert first["pid"] != second["pid"] and len(first["pid"]) >= 20
    assert sio.server.session_pid(first["sid"]) == first["pid"]
    assert not sio.server.recovered(first["sid"])
    assert restorer.calls == []  # nothing to resume without a pid


async def test_resumed_socket_keeps_sid_and_pid(sio: Any, restorer: Restorer) -> None:
    socket, answer = await connect(sio, '{"token":"t","pid":"known","offset":"o-7"}')
    assert answer == {"sid": "old-sid", "pid": "known"}
    assert restorer.calls == [
        ("/", "known", "o-7", {"token": "t", "pid": "known", "offset": "o-7"})
    ]
    assert sio.server.recovered("old-sid")
    # The connect handler ran for the resumed socket, which works as any other.
    assert sio.connects[-1][:2] == ("/", "old-sid")
    assert await socket.recv() == '42["auth",{"token":"t","pid":"known","offset":"o-7"}]'
    await socket.send('42["message","hi"]')
    assert await socket.recv() == '42["message-back","hi"]'


@pytest.mark.parametrize("pid", ["unknown", "boom"])
async def test_not_resumed_is_a_new_socket(sio: Any, restorer: Restorer, pid: str) -> None:
    _socket, answer = await connect(sio, json.dumps({"pid": pid}))  # no offset yet: allowed
    assert answer["sid"] != "old-sid" and answer["pid"] != pid
    assert restorer.calls == [("/", pid, None, {"pid": pid})]
    assert not sio.server.recovered(answer["sid"])


async def test_a_sid_still_connected_here_is_not_taken(sio: Any, restorer: Restorer) -> None:
    _first, answer = await connect(sio, '{"pid":"known","offset":"1"}')
    assert answer["sid"] == "old-sid"
    _second, again = await connect(sio, '{"pid":"known","offset":"1"}')
    assert again["sid"] != "old-sid" and again["pid"] != "known"


async def test_bad_pids_are_not_offered(sio: Any, restorer: Restorer) -> None:
    for payload in ('{"pid":7}', '{"pid":""}', json.dumps({"pid": "x" * 65})):
        _socket, answer = await connect(sio, payload)
        assert set(answer) == {"sid", "pid"}
    assert restorer.calls == []
