"""Issue 3, connecting: a JWT in ``auth: {token}``; every refusal is a CONNECT_ERROR
``{message: "Authentication failed", data: {code}}``, seen by both official clients."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from e2e_support import Client, Server, token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

CLIENTS = [
    pytest.param("python", ["websocket"], id="python-websocket"),
    pytest.param("node", ["polling"], id="node-polling"),
    pytest.param("node", ["websocket"], id="node-websocket"),
]


def _b64(obj: dict[str, Any]) -> str:
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unsigned_token(user_id: str) -> str:
    """A hand-made ``alg: none`` token (RFC 7519 section 6): header.claims. (empty signature)."""
    now = int(time.time())
    header = _b64({"alg": "none", "typ": "JWT"})
    claims = _b64({"sub": user_id, "name": "Mallory", "iat": now, "exp": now + 600})
    return f"{header}.{claims}."


def refusals() -> list[tuple[str, Any, str]]:
    """(case, auth payload, expected code)."""
    return [
        ("no auth at all", None, "token_missing"),
        ("auth without token", {}, "token_missing"),
        ("empty token", {"token": ""}, "token_missing"),
        ("token not a string", {"token": 42}, "token_missing"),
        ("garbage", {"token": "not-a-jwt"}, "token_invalid"),
        ("garbage with dots", {"token": "a.b.c"}, "token_invalid"),
        (
            "expired",
            {"token": token("alice", ttl=60, now=time.time() - 3600)},
            "token_expired",
        ),
        ("alg none", {"token": unsigned_token("alice")}, "token_invalid"),
        (
            "wrong secret",
            {"token": token("alice", secret="another-secret-" + "y" * 40)},
            "token_invalid",
        ),
        (
            "signature of another token",
            {"token": token("alice").rsplit(".", 1)[0] + "." + token("bob").rsplit(".", 1)[1]},
            "token_invalid",
        ),
    ]


@pytest.mark.parametrize(("kind", "transports"), CLIENTS)
async def test_token_refusals(
    sqlite_server: Server,
    make_client: Callable[..., Awaitable[Client]],
    kind: str,
    transports: list[str],
) -> None:
    client = await make_client(kind, "mallory", transports)
    failures = []
    for case, auth, code in refusals():
        result = await client.connect(sqlite_server.url, auth)
        observed = (result.connected, result.message, result.data)
        expected = (False, "Authentication failed", {"code": code})
        if observed != expected:
            failures.append(f"{case}: observed {observed}, expected {expected}")
    assert not failures, "\n".join(failures)
    # The refused connections were not registered as users.
    assert sqlite_server.app.service.connection_count == 0

    # A valid token connects, and the connection can work.
    await client.connect_ok(sqlite_server.url, token("alice", "Alice"))
    ack = await client.call("join-document", "auth-doc")
    assert ack["ok"] is True and ack["role"] == "owner", ack
