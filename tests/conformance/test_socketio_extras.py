"""Protocol behaviour beyond the official v5 test suite (kept apart so that the
official suites keep their exact count).

Facts from the Socket.IO v5 / Engine.IO v4 specifications: server->client acks
(EVENT with an id, answered by ACK / BINARY_ACK), binary attachments over HTTP
long-polling (``b`` + base64 records), CONNECT_ERROR carrying the refusal
message and data.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(30)

WAIT = 5.0


async def init_socketio_connection(sio: Any) -> Any:
    socket = await sio.ws("EIO=4&transport=websocket")
    assert (await socket.recv()).startswith("0")
    await socket.send("40")
    assert (await socket.recv()).startswith("40")
    assert await socket.recv() == '42["auth",{}]'
    return socket


async def poll_records(sio: Any, sid: str, count: int) -> list[str]:
    """Poll until ``count`` non-PING records arrived (PINGs are answered)."""
    records: list[str] = []
    async with asyncio.timeout(WAIT):
        while len(records) < count:
            res = await sio.http.get(sio.polling(sid))
            assert res.status == 200, res
            for record in res.text.split("\x1e"):
                if record == "2":
                    pong = await sio.http.post(sio.polling(sid), "3")
                    assert pong.status == 200
                else:
                    records.append(record)
    return records


async def test_server_to_client_ack(sio: Any, eventually: Any) -> None:
    socket = await init_socketio_connection(sio)
    await socket.send('42["request-ack","hello",{"n":1}]')
    (event,) = await socket.recv_packets(1)
    match = re.fullmatch(r'42(\d+)\["ack-me","hello",\{"n":1\}\]', event)
    assert match, event
    await socket.send(f'43{match.group(1)}["got",7]')
    await eventually(lambda: sio.acks == [("got", 7)])


async def test_server_to_client_ack_with_binary_attachments(sio: Any, eventually: Any) -> None:
    socket = await init_socketio_connection(sio)
    await socket.send('451-["request-ack",{"_placeholder":true,"num":0}]')
    await socket.send(bytes([9, 8, 7]))
    event, attachment = await socket.recv_packets(2)
    match = re.fullmatch(r'451-(\d+)\["ack-me",\{"_placeholder":true,"num":0\}\]', event)
    assert match, event
    assert attachment == bytes([9, 8, 7])

    await socket.send(f'461-{match.group(1)}[{{"_placeholder":true,"num":0}},"x"]')
    await socket.send(bytes([1, 2]))
    await eventually(lambda: sio.acks == [(bytes([1, 2]), "x")])


async def test_binary_event_over_http_long_polling(sio: Any) -> None:
    sid = await sio.init_long_polling_session()
    res = await sio.http.post(sio.polling(sid), "40")
    assert res.status == 200
    connect, auth = await poll_records(sio, sid, 2)
    assert connect.startswith("40{"), connect
    assert set(json.loads(connect[2:])) == {"sid"}
    assert auth == '42["auth",{}]'

    body = '451-["message",{"_placeholder":true,"num":0}]\x1ebAQID'
    res = await sio.http.post(sio.polling(sid), body)
    assert res.status == 200
    assert await poll_records(sio, sid, 2) == [
        '451-["message-back",{"_placeholder":true,"num":0}]',
        "bAQID",
    ]


async def test_connect_refused_by_the_connect_handler(sio: Any) -> None:
    socket = await sio.ws("EIO=4&transport=websocket")
    assert (await socket.recv()).startswith("0")
    await socket.send("40/refused,")
    data = await socket.recv()
    assert data.startswith("44/refused,"), data
    expected = {"message": "not allowed", "data": {"code": 42}}
    assert json.loads(data[len("44/refused,") :]) == expected
    # the Engine.IO connection stays usable for other namespaces
    await socket.send("40")
    assert (await socket.recv()).startswith("40{")


async def test_client_namespace_disconnect_is_reported_to_the_server(
    sio: Any, eventually: Any
) -> None:
    socket = await init_socketio_connection(sio)
    (_ns, sid, _auth) = sio.connects[-1]
    await socket.send("41")
    await eventually(lambda: sio.disconnects)
    assert sio.disconnects == [(sid, "client namespace disconnect")]
