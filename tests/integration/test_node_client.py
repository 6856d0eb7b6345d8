"""The official Node.js socket.io-client (4.8.4, tests/js) against cowrite.

Each test spawns one scenario script from tests/js (bounded by a timeout) and
checks the JSON it reports, plus what the server recorded.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

TRANSPORTS = {
    "websocket-only": {"transports": ["websocket"], "expectUpgrade": False},
    "polling-only": {"transports": ["polling"], "expectUpgrade": False},
    "polling-upgraded-to-websocket": {
        "transports": ["polling", "websocket"],
        "expectUpgrade": True,
    },
}
EXPECTED_TRANSPORTS = {
    "websocket-only": ("websocket", "websocket"),
    "polling-only": ("polling", "polling"),
    "polling-upgraded-to-websocket": ("polling", "websocket"),
}


@pytest.mark.parametrize("case", list(TRANSPORTS))
async def test_events_binary_and_acks(app: Any, run_node: Any, eventually: Any, case: str) -> None:
    result = await run_node("basic.mjs", {"url": app.url, **TRANSPORTS[case]})

    first, final = EXPECTED_TRANSPORTS[case]
    assert result["firstTransport"] == first
    assert result["transportAtEnd"] == final
    if case == "polling-upgraded-to-websocket":
        assert result["upgraded"] is True

    # text and binary events, both ways
    assert result["textEcho"] == ["hello", {"a": 1, "b": [True, None, "é"]}, 3.5]
    assert result["binaryEcho"] == [
        b"\x01\x02\x03",
        {"nested": b"\x04\x05", "list": [b"", b"\xff\x00\x80"]},
    ]
    assert result["bigEchoEqual"] is True

    # client -> server acks
    assert result["sumAck"] == [5]
    assert result["echoAck"] == ["x", b"\x07\x08", {"k": [1]}]

    # server -> client ack (emit with a callback)
    assert result["callbackPleaseArgs"] == ["hi", b"\x05"]
    assert result["callbackResult"] == ["pong", b"\x09\x09", 2]
    assert app.callbacks == [("pong", b"\x09\x09", 2)]

    sid = result["id"]
    assert [s for (ns, s, _auth) in app.connects if ns == "/"] == [sid]
    await eventually(lambda: app.reasons(sid))
    assert app.reasons(sid) == ["client namespace disconnect"]


@pytest.mark.parametrize("transports", [["websocket"], ["polling"]], ids=["websocket", "polling"])
async def test_two_namespaces(
    app: Any, run_node: Any, eventually: Any, transports: list[str]
) -> None:
    result = await run_node("namespaces.mjs", {"url": app.url, "transports": transports})

    assert result["sameManager"] is True
    main_sid, chat_sid = result["ids"]
    assert main_sid != chat_sid
    assert result["mainWhoami"] == [{"namespace": "/", "sid": main_sid}]
    assert result["chatWhoami"] == [{"namespace": "/chat", "sid": chat_sid}]
    assert result["chatSum"] == [42]
    assert ("/chat", chat_sid, {"token": "secret"}) in app.connects

    # refused by the /chat connect handler (ConnectionRefused with data)
    assert result["badToken"] == {
        "connected": False,
        "error": "bad token",
        "data": {"hint": "use the secret"},
    }
    # no handler registered for /nowhere
    assert result["unknownNamespace"] == {
        "connected": False,
        "error": "Invalid namespace",
        "data": None,
    }

    # leaving /chat does not disturb "/" on the same connection
    assert result["mainAfterChatLeft"] == [2]
    assert result["mainStillConnected"] is True
    await eventually(lambda: app.reasons(chat_sid))
    assert app.reasons(chat_sid) == ["client namespace disconnect"]


@pytest.mark.parametrize("transports", [["websocket"], ["polling"]], ids=["websocket", "polling"])
async def test_rooms(app: Any, run_node: Any, transports: list[str]) -> None:
    received = await run_node("rooms.mjs", {"url": app.url, "transports": transports})

    assert received["a"] == [["room-msg", "m1"], ["room-msg", "m4"]]  # room, room after b left
    assert received["b"] == [["room-msg", "m1"], ["room-msg", "m2"]]  # room, room except sender
    assert received["c"] == [["direct-msg", "m3"]]  # only the message to its sid
