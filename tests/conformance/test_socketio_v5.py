"""The official Socket.IO v5 protocol test suite, re-expressed in Python.

Source of the facts: socketio/socket.io-protocol, test-suite/test-suite.js
(v5, over Engine.IO v4).  One pytest per official ``it(...)``, grouped in
classes that mirror the ``describe(...)`` blocks: 16 Engine.IO tests at
``/socket.io/`` + 16 Socket.IO tests = 32 tests.  The upstream file itself
runs against our library API too (docs/DESIGN.md, "Conformance").

Server (fixture ``sio``): on connect to ``/`` or ``/custom`` it emits ``auth``
with the auth payload (``{}`` when none); ``message`` -> ``message-back`` with
the same arguments; ``message-with-ack`` -> ack with the same arguments.

Compared with upstream: as in test_engineio_v4.py (same sleeps; server state
instead of request-order races; the duplicate WebSocket must be accepted, then
closed; PING packets skipped only where upstream's ``waitForPackets`` skips
them).  Stricter: ``initSocketIOConnection`` upstream waits for three messages
without looking at them; ours checks the CONNECT and the ``auth`` packet.
"should close the connection if no handshake is received" checks upstream's
case (no answer to anything: closed within mocha's 2 s) and, stricter, that the
close also comes when the client does answer the pings (the connect timeout).
"should connect then disconnect from a custom namespace" answers no PING, as
upstream: it must finish before the ping timeout.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(30)

PING_INTERVAL = 0.3
PING_TIMEOUT = 0.2
SIO_CONNECT_TIMEOUT = 2.0  # must match the sio fixture
WAIT = 5.0
#: mocha's default timeout for one test (the socket.io suite's "connect" describe).
MOCHA_TIMEOUT = 2.0

PLACEHOLDERS = '{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}'


def assert_handshake(content: str, upgrades: list[str]) -> None:
    assert content.startswith("0"), content
    value = json.loads(content[1:])
    assert set(value) == {"sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"}, value
    assert isinstance(value["sid"], str)
    assert value["upgrades"] == upgrades
    assert value["pingInterval"] == 300
    assert value["pingTimeout"] == 200
    assert value["maxPayload"] == 1000000


async def open_ws_session(sio: Any) -> Any:
    socket = await sio.ws("EIO=4&transport=websocket")
    assert_handshake(await socket.recv(), [])  # Engine.IO handshake
    return socket


async def init_socketio_connection(sio: Any) -> Any:
    socket = await open_ws_session(sio)
    await socket.send("40")
    handshake = await socket.recv()  # Socket.IO handshake
    assert isinstance(handshake, str) and handshake.startswith("40"), handshake
    assert await socket.recv() == '42["auth",{}]'  # "auth" packet
    return socket


# --------------------------------------------------------------------------- Engine.IO


class TestEngineIOHandshakeHTTPLongPolling:
    async def test_should_successfully_open_a_session(self, sio: Any) -> None:
        response = await sio.http.get(sio.q("EIO=4&transport=polling"))
        assert response.status == 200
        assert_handshake(response.text, ["websocket"])

    async def test_should_fail_with_an_invalid_eio_query_parameter(self, sio: Any) -> None:
        response = await sio.http.get(sio.q("transport=polling"))
        assert response.status == 400
        response2 = await sio.http.get(sio.q("EIO=abc&transport=polling"))
        assert response2.status == 400

    async def test_should_fail_with_an_invalid_transport_query_parameter(self, sio: Any) -> None:
        response = await sio.http.get(sio.q("EIO=4"))
        assert response.status == 400
        response2 = await sio.http.get(sio.q("EIO=4&transport=abc"))
        assert response2.status == 400

    async def test_should_fail_with_an_invalid_request_method(self, sio: Any) -> None:
        response = await sio.http.post(sio.q("EIO=4&transport=polling"))
        assert response.status == 400
        response2 = await sio.http.put(sio.q("EIO=4&transport=polling"))
        assert response2.status == 400


class TestEngineIOHandshakeWebSocket:
    async def test_should_successfully_open_a_session(self, sio: Any) -> None:
        socket = await sio.ws("EIO=4&transport=websocket")
        data = await socket.recv()
        assert isinstance(data, str)
        assert_handshake(data, [])
        await socket.close()

    async def test_should_fail_with_an_invalid_eio_query_parameter(self, sio: Any) -> None:
        await sio.ws_fails("transport=websocket")
        await sio.ws_fails("EIO=abc&transport=websocket")

    async def test_should_fail_with_an_invalid_transport_query_parameter(self, sio: Any) -> None:
        await sio.ws_fails("EIO=4")
        await sio.ws_fails("EIO=4&transport=abc")


class TestEngineIOHeartbeatHTTPLongPolling:
    async def test_should_send_ping_pong_packets(self, sio: Any) -> None:
        sid = await sio.init_long_polling_session()
        for _ in range(3):
            poll_response = await sio.http.get(sio.polling(sid))
            assert poll_response.status == 200
            assert poll_response.text == "2"
            push_response = await sio.http.post(sio.polling(sid), "3")
            assert push_response.status == 200

    async def test_should_close_the_session_upon_ping_timeout(self, sio: Any) -> None:
        sid = await sio.init_long_polling_session()
        await asyncio.sleep(PING_INTERVAL + PING_TIMEOUT)
        poll_response = await sio.http.get(sio.polling(sid))
        assert poll_response.status == 400


class TestEngineIOHeartbeatWebSocket:
    async def test_should_send_ping_pong_packets(self, sio: Any) -> None:
        socket = await open_ws_session(sio)
        for _ in range(3):
            data = await socket.recv(timeout=PING_INTERVAL + 1.0)
            assert data == "2"
            await socket.send("3")
        await socket.close()

    async def test_should_close_the_session_upon_ping_timeout(self, sio: Any) -> None:
        socket = await sio.ws("EIO=4&transport=websocket")
        await socket.wait_closed(timeout=PING_INTERVAL + PING_TIMEOUT + 1.5)


class TestEngineIOCloseHTTPLongPolling:
    async def test_should_forcefully_close_the_session(self, sio: Any) -> None:
        sid = await sio.init_long_polling_session()
        poll = asyncio.create_task(sio.http.get(sio.polling(sid)))
        await sio.wait_parked(sid)  # upstream: Promise.all, the GET first
        await sio.http.post(sio.polling(sid), "1")
        poll_response = await asyncio.wait_for(poll, WAIT)

        assert poll_response.status == 200
        assert poll_response.text == "6"

        poll_response2 = await sio.http.get(sio.polling(sid))
        assert poll_response2.status == 400


class TestEngineIOCloseWebSocket:
    async def test_should_forcefully_close_the_session(self, sio: Any) -> None:
        socket = await open_ws_session(sio)
        await socket.send("1")
        await socket.wait_closed(timeout=WAIT)


class TestEngineIOUpgrade:
    async def test_should_successfully_upgrade_from_http_long_polling_to_websocket(
        self, sio: Any
    ) -> None:
        sid = await sio.init_long_polling_session()
        socket = await sio.ws(f"EIO=4&transport=websocket&sid={sid}")
        await socket.send("2probe")  # send probe
        assert await socket.recv() == "3probe"
        await socket.send("5")  # complete upgrade

    async def test_should_ignore_http_requests_with_same_sid_after_upgrade(self, sio: Any) -> None:
        sid = await sio.init_long_polling_session()
        socket = await sio.ws(f"EIO=4&transport=websocket&sid={sid}")
        await socket.send("2probe")
        await socket.send("5")
        await sio.wait_upgraded(sid)

        poll_response = await sio.http.get(sio.polling(sid))
        assert poll_response.status == 400

    async def test_should_ignore_websocket_connection_with_same_sid_after_upgrade(
        self, sio: Any
    ) -> None:
        sid = await sio.init_long_polling_session()
        socket = await sio.ws(f"EIO=4&transport=websocket&sid={sid}")
        await socket.send("2probe")
        await socket.send("5")
        await sio.wait_upgraded(sid)

        await sio.ws_accepted_then_closed(f"EIO=4&transport=websocket&sid={sid}")


# --------------------------------------------------------------------------- Socket.IO


class TestSocketIOConnect:
    async def test_should_allow_connection_to_the_main_namespace(self, sio: Any) -> None:
        socket = await open_ws_session(sio)
        await socket.send("40")
        data = await socket.recv()
        assert data.startswith("40"), data
        handshake = json.loads(data[2:])
        assert set(handshake) == {"sid"}
        assert isinstance(handshake["sid"], str)
        assert await socket.recv() == '42["auth",{}]'

    async def test_should_allow_connection_to_the_main_namespace_with_a_payload(
        self, sio: Any
    ) -> None:
        socket = await open_ws_session(sio)
        await socket.send('40{"token":"123"}')
        data = await socket.recv()
        assert data.startswith("40"), data
        handshake = json.loads(data[2:])
        assert set(handshake) == {"sid"}
        assert isinstance(handshake["sid"], str)
        assert await socket.recv() == '42["auth",{"token":"123"}]'

    async def test_should_allow_connection_to_a_custom_namespace(self, sio: Any) -> None:
        socket = await open_ws_session(sio)
        await socket.send("40/custom,")
        data = await socket.recv()
        assert data.startswith("40/custom,"), data
        handshake = json.loads(data[10:])
        assert set(handshake) == {"sid"}
        assert isinstance(handshake["sid"], str)
        assert await socket.recv() == '42/custom,["auth",{}]'

    async def test_should_allow_connection_to_a_custom_namespace_with_a_payload(
        self, sio: Any
    ) -> None:
        socket = await open_ws_session(sio)
        await socket.send('40/custom,{"token":"abc"}')
        data = await socket.recv()
        assert data.startswith("40/custom,"), data
        handshake = json.loads(data[10:])
        assert set(handshake) == {"sid"}
        assert isinstance(handshake["sid"], str)
        assert await socket.recv() == '42/custom,["auth",{"token":"abc"}]'

    async def test_should_disallow_connection_to_an_unknown_namespace(self, sio: Any) -> None:
        socket = await open_ws_session(sio)
        await socket.send("40/random")
        assert await socket.recv() == '44/random,{"message":"Invalid namespace"}'

    async def test_should_disallow_connection_with_an_invalid_handshake(self, sio: Any) -> None:
        socket = await open_ws_session(sio)
        await socket.send("4abc")
        await socket.wait_closed(timeout=WAIT)

    async def test_should_close_the_connection_if_no_handshake_is_received(self, sio: Any) -> None:
        # upstream: a client that answers nothing is closed within the test's time
        silent = await sio.ws("EIO=4&transport=websocket")
        await silent.wait_closed(timeout=MOCHA_TIMEOUT)
        socket = await sio.ws("EIO=4&transport=websocket")
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with asyncio.timeout(SIO_CONNECT_TIMEOUT + 2.0):
            while (data := await socket.recv_or_none(timeout=WAIT)) is not None:
                if data == "2":
                    await socket.send("3")  # stay alive: only the connect timeout may close
        # closed by the connect timeout, not by a ping timeout
        assert loop.time() - started >= SIO_CONNECT_TIMEOUT - 0.25


class TestSocketIODisconnect:
    async def test_should_disconnect_from_the_main_namespace(self, sio: Any) -> None:
        socket = await init_socketio_connection(sio)
        await socket.send("41")
        # the Engine.IO connection stays open: the next packet is a PING
        assert await socket.recv(timeout=PING_INTERVAL + 1.0) == "2"

    async def test_should_connect_then_disconnect_from_a_custom_namespace(self, sio: Any) -> None:
        socket = await init_socketio_connection(sio)
        assert await socket.recv(timeout=PING_INTERVAL + 1.0) == "2"  # ping (not answered)

        await socket.send("40/custom")
        handshake = await socket.recv()  # Socket.IO handshake
        assert handshake.startswith("40/custom,"), handshake
        assert await socket.recv() == '42/custom,["auth",{}]'  # auth packet

        await socket.send("41/custom")
        await socket.send('42["message","message to main namespace"]')
        assert await socket.recv() == '42["message-back","message to main namespace"]'


class TestSocketIOMessage:
    async def test_should_send_a_plain_text_packet(self, sio: Any) -> None:
        socket = await init_socketio_connection(sio)
        await socket.send('42["message",1,"2",{"3":[true]}]')
        assert await socket.recv() == '42["message-back",1,"2",{"3":[true]}]'

    async def test_should_send_a_packet_with_binary_attachments(self, sio: Any) -> None:
        socket = await init_socketio_connection(sio)
        await socket.send(f'452-["message",{PLACEHOLDERS}]')
        await socket.send(bytes([1, 2, 3]))
        await socket.send(bytes([4, 5, 6]))

        packets = await socket.recv_packets(3)
        assert packets[0] == f'452-["message-back",{PLACEHOLDERS}]'
        assert packets[1] == bytes([1, 2, 3])
        assert packets[2] == bytes([4, 5, 6])
        await socket.close()

    async def test_should_send_a_plain_text_packet_with_an_ack(self, sio: Any) -> None:
        socket = await init_socketio_connection(sio)
        await socket.send('42456["message-with-ack",1,"2",{"3":[false]}]')
        assert await socket.recv() == '43456[1,"2",{"3":[false]}]'

    async def test_should_send_a_packet_with_binary_attachments_and_an_ack(self, sio: Any) -> None:
        socket = await init_socketio_connection(sio)
        await socket.send(f'452-789["message-with-ack",{PLACEHOLDERS}]')
        await socket.send(bytes([1, 2, 3]))
        await socket.send(bytes([4, 5, 6]))

        packets = await socket.recv_packets(3)
        assert packets[0] == f"462-789[{PLACEHOLDERS}]"
        assert packets[1] == bytes([1, 2, 3])
        assert packets[2] == bytes([4, 5, 6])
        await socket.close()

    async def test_should_close_the_connection_upon_invalid_format_unknown_packet_type(
        self, sio: Any
    ) -> None:
        socket = await init_socketio_connection(sio)
        await socket.send("4abc")
        await socket.wait_closed(timeout=WAIT)

    async def test_should_close_the_connection_upon_invalid_format_invalid_payload_format(
        self, sio: Any
    ) -> None:
        socket = await init_socketio_connection(sio)
        await socket.send("42{}")
        await socket.wait_closed(timeout=WAIT)

    async def test_should_close_the_connection_upon_invalid_format_invalid_ack_id(
        self, sio: Any
    ) -> None:
        socket = await init_socketio_connection(sio)
        await socket.send('42abc["message-with-ack",1,"2",{"3":[false]}]')
        await socket.wait_closed(timeout=WAIT)
