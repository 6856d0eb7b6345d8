"""The Origin allow-list (``cors_origins``): a browser page from a foreign site
must not be able to open a session, neither by the polling handshake nor by
the WebSocket handshake (cross-site WebSocket hijacking)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ALLOWED = "http://allowed.example"
FOREIGN = "http://evil.example"


@pytest.fixture
async def strict_app(start_app: Any) -> Any:
    return await start_app(cors_origins=(ALLOWED,))


async def test_polling_handshake_with_a_foreign_origin_is_refused(
    strict_app: Any, http_for: Any
) -> None:
    http = http_for(strict_app.port)
    res = await http.get("/socket.io/?EIO=4&transport=polling", headers={"Origin": FOREIGN})
    assert 400 <= res.status < 500, (res.status, res.text)
    assert not res.text.startswith("0{"), "a session was opened for a foreign origin"


async def test_refusal_does_not_grant_cors_access_to_the_foreign_origin(
    strict_app: Any, http_for: Any
) -> None:
    """Access-Control-Allow-Origin may only ever name an allowed origin."""
    http = http_for(strict_app.port)
    res = await http.get("/socket.io/?EIO=4&transport=polling", headers={"Origin": FOREIGN})
    assert res.headers.get("Access-Control-Allow-Origin") in (None, ""), dict(res.headers)


async def test_polling_handshake_with_an_allowed_origin(strict_app: Any, http_for: Any) -> None:
    http = http_for(strict_app.port)
    res = await http.get("/socket.io/?EIO=4&transport=polling", headers={"Origin": ALLOWED})
    assert res.status == 200
    assert res.text.startswith("0{")
    assert res.headers.get("Access-Control-Allow-Origin") == ALLOWED
    # and the session's next requests from that origin work too
    sid = json.loads(res.text[1:])["sid"]
    res = await http.post(
        f"/socket.io/?EIO=4&transport=polling&sid={sid}", "40", headers={"Origin": ALLOWED}
    )
    assert res.status == 200


async def test_polling_request_without_origin_is_allowed(strict_app: Any, http_for: Any) -> None:
    """Non-browser clients send no Origin header: nothing to check."""
    res = await http_for(strict_app.port).get("/socket.io/?EIO=4&transport=polling")
    assert res.status == 200
    assert res.text.startswith("0{")


async def test_websocket_handshake_with_a_foreign_origin_is_refused(
    strict_app: Any, ws_connect: Any
) -> None:
    url = f"{strict_app.ws_base}/socket.io/?EIO=4&transport=websocket"
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await ws_connect(url, headers={"Origin": FOREIGN})
    assert 400 <= info.value.status < 500


async def test_websocket_handshake_with_an_allowed_origin(strict_app: Any, ws_connect: Any) -> None:
    url = f"{strict_app.ws_base}/socket.io/?EIO=4&transport=websocket"
    socket = await ws_connect(url, headers={"Origin": ALLOWED})
    assert (await socket.recv()).startswith("0{")


@pytest.mark.parametrize("transport", ["polling", "websocket"])
async def test_official_client_with_a_foreign_origin_is_refused(
    strict_app: Any, run_node: Any, transport: str
) -> None:
    state = await run_node(
        "origin.mjs", {"url": strict_app.url, "transport": transport, "origin": FOREIGN}
    )
    assert state["connected"] is False, state
    assert state["error"] != "timeout", "refused at the handshake, not left hanging"
    assert strict_app.connects == []


@pytest.mark.parametrize("transport", ["polling", "websocket"])
async def test_official_client_with_an_allowed_origin_connects(
    strict_app: Any, run_node: Any, transport: str
) -> None:
    state = await run_node(
        "origin.mjs", {"url": strict_app.url, "transport": transport, "origin": ALLOWED}
    )
    assert state == {"connected": True}
