"""The official Engine.IO v4 protocol test suite, re-expressed in Python.

Source of the facts: socketio/engine.io-protocol, test-suite/test-suite.js
(24 tests), plus "closes the session upon cancelled polling request" from the
copy in socketio/socket.io (docs/engine.io-protocol/v4-test-suite): 25 tests.
One pytest per official ``it(...)``, grouped in classes that mirror the
``describe(...)`` blocks.  The upstream file itself runs against our library
API too (docs/DESIGN.md, "Conformance").

The server (fixture ``eio``) is an Engine.IO-only echo server at ``/engine.io/``
with pingInterval 300 ms, pingTimeout 200 ms, maxPayload 1 000 000.

Compared with upstream, line by line; nowhere looser in what is asserted:

* Same sleeps: the ping-timeout test polls exactly 500 ms after the handshake.
* Where upstream relies on the order in which two of its requests reach the
  server (``sleep(5)`` between two GETs; ``Promise.all`` of a GET and a POST;
  ``2probe``/``5`` sent just before a GET or a second WebSocket), we wait for
  the server to have processed the first (``wait_parked``, ``wait_upgraded``)
  instead of sleeping: the order upstream means, with no timing margin.
* The second WebSocket after an upgrade must be accepted (HTTP 101) and then
  closed by the server without any packet, as upstream needs (Node's ``ws``
  reports a refused handshake as an error, so its ``close`` wait fails).
* Stricter: an invalid ``EIO`` or ``transport`` on a WebSocket must be refused
  or closed without a packet (upstream starts waiting for ``close`` without
  awaiting it, so it asserts nothing); the WebSocket ping-timeout close must
  come within 2 s (upstream: the describe's 5 s mocha timeout).
* Looser, timing only: after an upgrade, ``recv_packets`` skips PING packets
  (``"2"``) before the expected ``4hello`` (upstream's first ``message`` would
  be a PING if the test took longer than the 300 ms ping interval; the
  socket.io suite's own ``waitForPackets`` skips them the same way).  Each
  network wait is bounded by 5 s where mocha bounds a whole test by 2 s.
* The upstream WebSocket tests read the ``3probe`` answer only when they
  assert it; ours, reading frames in order, reads it before ``4hello``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
import pytest

pytestmark = pytest.mark.timeout(30)

PING_INTERVAL = 0.3
PING_TIMEOUT = 0.2
WAIT = 5.0


def assert_handshake(content: str, upgrades: list[str]) -> None:
    assert content.startswith("0"), content
    value = json.loads(content[1:])
    assert set(value) == {"sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"}, value
    assert isinstance(value["sid"], str)
    assert value["upgrades"] == upgrades
    assert value["pingInterval"] == 300
    assert value["pingTimeout"] == 200
    assert value["maxPayload"] == 1000000


async def open_ws_session(eio: Any, query: str = "EIO=4&transport=websocket") -> Any:
    socket = await eio.ws(query)
    assert_handshake(await socket.recv(), [])  # handshake
    return socket


class TestHandshakeHTTPLongPolling:
    async def test_successfully_opens_a_session(self, eio: Any) -> None:
        response = await eio.http.get(eio.q("EIO=4&transport=polling"))
        assert response.status == 200
        assert_handshake(response.text, ["websocket"])

    async def test_fails_with_an_invalid_eio_query_parameter(self, eio: Any) -> None:
        response = await eio.http.get(eio.q("transport=polling"))
        assert response.status == 400
        response2 = await eio.http.get(eio.q("EIO=abc&transport=polling"))
        assert response2.status == 400

    async def test_fails_with_an_invalid_transport_query_parameter(self, eio: Any) -> None:
        response = await eio.http.get(eio.q("EIO=4"))
        assert response.status == 400
        response2 = await eio.http.get(eio.q("EIO=4&transport=abc"))
        assert response2.status == 400

    async def test_fails_with_an_invalid_request_method(self, eio: Any) -> None:
        response = await eio.http.post(eio.q("EIO=4&transport=polling"))
        assert response.status == 400
        response2 = await eio.http.put(eio.q("EIO=4&transport=polling"))
        assert response2.status == 400


class TestHandshakeWebSocket:
    async def test_successfully_opens_a_session(self, eio: Any) -> None:
        socket = await eio.ws("EIO=4&transport=websocket")
        data = await socket.recv()
        assert isinstance(data, str)
        assert_handshake(data, [])
        await socket.close()

    async def test_fails_with_an_invalid_eio_query_parameter(self, eio: Any) -> None:
        await eio.ws_fails("transport=websocket")
        await eio.ws_fails("EIO=abc&transport=websocket")

    async def test_fails_with_an_invalid_transport_query_parameter(self, eio: Any) -> None:
        await eio.ws_fails("EIO=4")
        await eio.ws_fails("EIO=4&transport=abc")


class TestMessageHTTPLongPolling:
    async def _push_then_poll(self, eio: Any, body: str) -> str:
        sid = await eio.init_long_polling_session()
        push_response = await eio.http.post(eio.polling(sid), body)
        assert push_response.status == 200
        assert push_response.text == "ok"
        poll_response = await eio.http.get(eio.polling(sid))
        assert poll_response.status == 200
        return str(poll_response.text)

    async def test_sends_and_receives_a_payload_containing_one_plain_text_packet(
        self, eio: Any
    ) -> None:
        assert await self._push_then_poll(eio, "4hello") == "4hello"

    async def test_sends_and_receives_a_payload_containing_several_plain_text_packets(
        self, eio: Any
    ) -> None:
        body = "4test1\x1e4test2\x1e4test3"
        assert await self._push_then_poll(eio, body) == body

    async def test_sends_and_receives_a_payload_containing_plain_text_and_binary_packets(
        self, eio: Any
    ) -> None:
        body = "4hello\x1ebAQIDBA=="
        assert await self._push_then_poll(eio, body) == body

    async def test_closes_the_session_upon_invalid_packet_format(self, eio: Any) -> None:
        sid = await eio.init_long_polling_session()
        # the server may also drop the connection abnormally instead of answering 400
        with contextlib.suppress(aiohttp.ClientError):
            push_response = await eio.http.post(eio.polling(sid), "abc")
            assert push_response.status == 400
        poll_response = await eio.http.get(eio.polling(sid))
        assert poll_response.status == 400

    async def test_closes_the_session_upon_duplicate_poll_requests(self, eio: Any) -> None:
        sid = await eio.init_long_polling_session()
        first = asyncio.create_task(eio.http.get(eio.polling(sid)))
        await eio.wait_parked(sid)  # upstream: sleep(5)
        second = await eio.http.get(eio.polling(sid) + "&t=burst")
        poll_responses = [await asyncio.wait_for(first, WAIT), second]

        assert poll_responses[0].status == 200
        assert poll_responses[0].text == "1"
        # engine.io-protocol accepts 400 or 500 (Node's); the socket.io copy, 400
        assert poll_responses[1].status == 400

        poll_response = await eio.http.get(eio.polling(sid))
        assert poll_response.status == 400

    async def test_closes_the_session_upon_cancelled_polling_request(self, eio: Any) -> None:
        sid = await eio.init_long_polling_session()
        url = f"http://127.0.0.1:{eio.port}{eio.polling(sid)}"

        async with aiohttp.ClientSession() as aborting:

            async def poll() -> None:
                async with aborting.get(url) as resp:
                    await resp.read()

            task = asyncio.create_task(poll())
            await eio.wait_parked(sid)
            task.cancel()  # the AbortController of the official test
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await task
        # leaving the session closed the aborted request's TCP connection
        await eio.wait_closed_session(sid)

        poll_response = await eio.http.get(eio.polling(sid))
        assert poll_response.status == 400


class TestMessageWebSocket:
    async def test_sends_and_receives_a_plain_text_packet(self, eio: Any) -> None:
        socket = await open_ws_session(eio)
        await socket.send("4hello")
        assert await socket.recv() == "4hello"
        await socket.close()

    async def test_sends_and_receives_a_binary_packet(self, eio: Any) -> None:
        socket = await open_ws_session(eio)
        await socket.send(bytes([1, 2, 3, 4]))
        assert await socket.recv() == bytes([1, 2, 3, 4])
        await socket.close()

    async def test_closes_the_session_upon_invalid_packet_format(self, eio: Any) -> None:
        socket = await open_ws_session(eio)
        await socket.send("abc")
        await socket.wait_closed(timeout=WAIT)
        await socket.close()


class TestHeartbeatHTTPLongPolling:
    async def test_sends_ping_pong_packets(self, eio: Any) -> None:
        sid = await eio.init_long_polling_session()
        for _ in range(3):
            poll_response = await eio.http.get(eio.polling(sid))
            assert poll_response.status == 200
            assert poll_response.text == "2"
            push_response = await eio.http.post(eio.polling(sid), "3")
            assert push_response.status == 200

    async def test_closes_the_session_upon_ping_timeout(self, eio: Any) -> None:
        sid = await eio.init_long_polling_session()
        await asyncio.sleep(PING_INTERVAL + PING_TIMEOUT)
        poll_response = await eio.http.get(eio.polling(sid))
        assert poll_response.status == 400


class TestHeartbeatWebSocket:
    async def test_sends_ping_pong_packets(self, eio: Any) -> None:
        socket = await open_ws_session(eio)
        for _ in range(3):
            data = await socket.recv(timeout=PING_INTERVAL + 1.0)
            assert data == "2"
            await socket.send("3")
        await socket.close()

    async def test_closes_the_session_upon_ping_timeout(self, eio: Any) -> None:
        socket = await eio.ws("EIO=4&transport=websocket")
        await socket.wait_closed(timeout=PING_INTERVAL + PING_TIMEOUT + 1.5)


class TestCloseHTTPLongPolling:
    async def test_forcefully_closes_the_session(self, eio: Any) -> None:
        sid = await eio.init_long_polling_session()
        poll = asyncio.create_task(eio.http.get(eio.polling(sid)))
        await eio.wait_parked(sid)  # upstream: Promise.all, the GET first
        await eio.http.post(eio.polling(sid), "1")
        poll_response = await asyncio.wait_for(poll, WAIT)

        assert poll_response.status == 200
        assert poll_response.text == "6"

        poll_response2 = await eio.http.get(eio.polling(sid))
        assert poll_response2.status == 400


class TestCloseWebSocket:
    async def test_forcefully_closes_the_session(self, eio: Any) -> None:
        socket = await open_ws_session(eio)
        await socket.send("1")
        await socket.wait_closed(timeout=WAIT)


class TestUpgrade:
    async def test_successfully_upgrades_from_http_long_polling_to_websocket(
        self, eio: Any
    ) -> None:
        sid = await eio.init_long_polling_session()
        socket = await eio.ws(f"EIO=4&transport=websocket&sid={sid}")

        await socket.send("2probe")  # send probe
        assert await socket.recv() == "3probe"

        poll_response = await eio.http.get(eio.polling(sid))
        assert poll_response.status == 200
        # "noop" packet to cleanly end the HTTP long-polling request
        assert poll_response.text == "6"

        await socket.send("5")  # complete upgrade
        await socket.send("4hello")
        assert await socket.recv_packets(1) == ["4hello"]

    async def test_ignores_http_requests_with_same_sid_after_upgrade(self, eio: Any) -> None:
        sid = await eio.init_long_polling_session()
        socket = await eio.ws(f"EIO=4&transport=websocket&sid={sid}")
        await socket.send("2probe")
        await socket.send("5")
        await eio.wait_upgraded(sid)

        poll_response = await eio.http.get(eio.polling(sid))
        assert poll_response.status == 400

        await socket.send("4hello")
        assert await socket.recv() == "3probe"
        assert await socket.recv_packets(1) == ["4hello"]

    async def test_ignores_websocket_connection_with_same_sid_after_upgrade(self, eio: Any) -> None:
        sid = await eio.init_long_polling_session()
        socket = await eio.ws(f"EIO=4&transport=websocket&sid={sid}")
        await socket.send("2probe")
        await socket.send("5")
        await eio.wait_upgraded(sid)

        await eio.ws_accepted_then_closed(f"EIO=4&transport=websocket&sid={sid}")

        await socket.send("4hello")
        assert await socket.recv() == "3probe"
        assert await socket.recv_packets(1) == ["4hello"]
