"""The server API of one instance over real HTTP: key, methods, errors, fuzz.

Bad input of any shape gets a 4xx with ``{"error": {"code", "message"}}``,
never a 500 and never an ERROR log line.
"""

from __future__ import annotations

import base64
import logging
import os
from typing import Any

import pytest
from api_support import KEY, Api, connect_client
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("COWRITE_FUZZ_EXAMPLES", "200"))
METHODS = ("publish", "history", "head", "presence", "grant", "revoke", "disconnect", "info")


def is_error(body: Any, code: str | None = None) -> bool:
    err = body.get("error") if isinstance(body, dict) else None
    ok = (
        isinstance(err, dict)
        and isinstance(err.get("code"), str)
        and isinstance(err.get("message"), str)
    )
    return ok and (code is None or err["code"] == code)


async def test_the_key_is_required_and_compared(api: Api) -> None:
    for headers in (
        {"X-API-Key": ""},
        {"X-API-Key": KEY + "x"},
        {"X-API-Key": KEY[:-1]},
        {"X-API-Key": "", "Authorization": f"Bearer {KEY}"},
        {"X-API-Key": "", "Authorization": "apikey wrong"},
    ):
        status, body = await api.call("info", headers=headers)
        assert status == 401 and is_error(body, "unauthorized"), headers
    status, body = await api.call(
        "info", headers={"X-API-Key": "", "Authorization": f"apikey {KEY}"}
    )
    assert status == 200, body
    assert (await api.ok("info"))["connections"] == 0


async def test_http_level_refusals_are_json(api: Api) -> None:
    status, body, headers = await api.raw("info", b"{}", verb="GET")
    assert (status, headers["Allow"]) == (405, "POST") and is_error(body, "method_not_allowed")
    status, body, _ = await api.raw("info", b"{}", headers={"Content-Type": "text/plain"})
    assert status == 415 and is_error(body, "unsupported_media_type")
    for junk in (b"", b"{", b"\xff\xfe", b"[1,"):
        status, body, _ = await api.raw("head", junk)
        assert status == 400 and is_error(body, "invalid_json"), junk
    status, body = await api.call("head", [1, 2])
    assert status == 400 and is_error(body, "invalid_params")
    status, body = await api.call("nope", {})
    assert status == 404 and is_error(body, "unknown_method")
    status, body = await api.call("", {})
    assert status == 404 and is_error(body, "unknown_method")
    big = b'{"documentId": "d", "userId": "u", "operation": "' + b"x" * 200_000 + b'"}'
    status, body, _ = await api.raw("publish", big)
    assert status == 413 and is_error(body, "payload_too_large")
    status, body = await api.call("head", {"documentId": "d", "extra": 1})
    assert status == 400 and is_error(body, "invalid_params")


async def test_publish_history_head_and_idempotency(api: Api, api_app: Any) -> None:
    status, body = await api.call("publish", {"documentId": "doc", "userId": "svc", "operation": 1})
    assert status == 404 and is_error(body, "unknown_document")
    created = await api.ok("grant", {"documentId": "doc", "userId": "alice", "role": "owner"})
    assert created["created"] is True
    reader = await connect_client(api_app_url(api_app), "alice")
    try:
        ack = await reader.sio.call("join-document", {"documentId": "doc"}, timeout=5)
        assert ack["ok"] and ack["head"] == 0
        first = await api.ok(
            "publish",
            {"documentId": "doc", "userId": "svc", "operation": {"i": 1}, "clientOpId": "c1"},
        )
        assert first == {"documentId": "doc", "seq": 1}
        again = await api.ok(
            "publish",
            {"documentId": "doc", "userId": "svc", "operation": {"i": 1}, "clientOpId": "c1"},
        )
        assert again == {"documentId": "doc", "seq": 1, "duplicate": True}
        blob = bytes(range(256))
        binary = {"kind": "y", "update": {"$binary": base64.b64encode(blob).decode()}}
        assert (
            await api.ok("publish", {"documentId": "doc", "userId": "svc", "operation": binary})
        )["seq"] == 2
        # The socket client got both, once, in order, as remote-edits of "svc".
        await reader.wait_for(lambda: len(reader.got("remote-edit")) >= 2, "two remote-edits")
        edits = reader.got("remote-edit")
        assert [(e["seq"], e["userId"], e["clientOpId"]) for e in edits] == [
            (1, "svc", "c1"),
            (2, "svc", None),
        ]
        assert edits[1]["operation"] == {"kind": "y", "update": blob}  # a real binary attachment
        history = await api.ok("history", {"documentId": "doc", "since": 0, "limit": 1})
        assert history["head"] == 2 and history["more"] is True
        assert [op["seq"] for op in history["ops"]] == [1]
        rest = await api.ok("history", {"documentId": "doc", "since": 1})
        assert rest["ops"][0]["operation"] == binary and rest["more"] is False
        assert (await api.ok("head", {"documentId": "doc"}))["head"] == 2
        roster = (await api.ok("presence", {"documentId": "doc"}))["presence"]
        assert [(p["userId"], p["name"]) for p in roster] == [("alice", "Alice")]
        info = await api.ok("info")
        assert info["instances"][0]["documents"] == [{"documentId": "doc", "members": 1}]
        assert (info["connections"], info["answered"], info["expected"]) == (1, 1, 1)
    finally:
        await reader.sio.disconnect()


async def test_publish_has_the_edit_limits(api: Api) -> None:
    await api.ok("grant", {"documentId": "lim", "userId": "o", "role": "owner"})
    base = {"documentId": "lim", "userId": "svc"}
    status, body = await api.call("publish", {**base, "operation": "x" * 70_000})
    assert status == 413 and is_error(body, "payload_too_large")
    deep: Any = 0
    for _ in range(210):
        deep = [deep]
    status, body = await api.call("publish", {**base, "operation": deep})
    assert status == 400 and is_error(body, "invalid_payload")
    for bad in ({"clientOpId": ""}, {"clientOpId": "x" * 129}, {"clientOpId": [1]}, {}):
        params = {**base, **bad} if bad else dict(base)
        if bad:
            params["operation"] = 1
        status, body = await api.call("publish", params)
        assert status == 400 and is_error(body, "invalid_params"), bad
    status, body = await api.call("publish", {**base, "operation": {"$binary": "not base64!"}})
    assert status == 400 and is_error(body, "invalid_params")


async def test_grant_revoke_and_disconnect_act_on_sockets(api: Api, api_app: Any) -> None:
    await api.ok("grant", {"documentId": "shared", "userId": "alice", "role": "owner"})
    status, body = await api.call("grant", {"documentId": "none", "userId": "b", "role": "editor"})
    assert status == 404 and is_error(body, "unknown_document")
    status, body = await api.call("grant", {"documentId": "shared", "userId": "b", "role": "god"})
    assert status == 400 and is_error(body, "invalid_params")
    bob = await connect_client(api_app_url(api_app), "bob")
    try:
        denied = await bob.sio.call("join-document", {"documentId": "shared"}, timeout=5)
        assert denied["error"]["code"] == "access_denied"
        await api.ok("grant", {"documentId": "shared", "userId": "bob", "role": "editor"})
        assert (await bob.sio.call("join-document", {"documentId": "shared"}, timeout=5))["ok"]
        edit = {"documentId": "shared", "operation": 1, "clientOpId": "b1"}
        assert (await bob.sio.call("edit-operation", edit, timeout=5))["ok"]
        revoked = await api.ok("revoke", {"documentId": "shared", "userId": "bob"})
        assert revoked["role"] is None
        await bob.wait_for(lambda: bool(bob.got("access-revoked")), "access-revoked")
        assert bob.got("access-revoked") == [{"documentId": "shared"}]
        refused = await bob.sio.call("edit-operation", {**edit, "clientOpId": "b2"}, timeout=5)
        assert refused["error"]["code"] == "not_joined"
        status, body = await api.call("disconnect", {"userId": "bob", "code": "bad code!"})
        assert status == 400 and is_error(body, "invalid_params")
        result = await api.ok("disconnect", {"userId": "bob", "code": "banned", "reason": "spam"})
        assert result == {"userId": "bob", "disconnected": 1, "instancesNotified": 0}
        await bob.wait_for(bob.disconnected.is_set, "the disconnect")
        assert bob.got("server-disconnect") == [{"code": "banned", "reason": "spam"}]
    finally:
        if bob.sio.connected:
            await bob.sio.disconnect()


def api_app_url(app: Any) -> str:
    return f"http://127.0.0.1:{app.port}"


# -- fuzz ---------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(["doc", "fz", "owner", "editor", "viewer", "", "\x00", "a" * 300]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
KEYS = [
    "documentId",
    "userId",
    "operation",
    "clientOpId",
    "since",
    "limit",
    "role",
    "code",
    "reason",
]
params = st.one_of(
    st.dictionaries(st.sampled_from(KEYS), values, max_size=5),
    values,
)


@pytest.fixture
async def fuzz_api(api: Api) -> Api:
    for doc in ("doc", "fz"):
        await api.ok("grant", {"documentId": doc, "userId": "owner", "role": "owner"})
    return api


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(method=st.sampled_from(METHODS), body=params)
@example(method="publish", body={"documentId": "doc", "userId": "u", "operation": 2**80})
@example(method="history", body={"documentId": "doc", "since": 2**63, "limit": 2**63})
@example(method="publish", body={"documentId": "doc", "userId": "u", "operation": {"$binary": 1}})
@example(method="grant", body={"documentId": "new", "userId": "u", "role": "owner"})
@example(method="disconnect", body={"userId": "u", "reason": "\x00"})
async def test_fuzzed_bodies_get_a_result_or_a_4xx(
    fuzz_api: Api, caplog: pytest.LogCaptureFixture, method: str, body: Any
) -> None:
    caplog.set_level(logging.ERROR)
    status, answer = await fuzz_api.call(method, body)
    where = f"{method} {body!r:.300} -> {status} {answer!r:.300}"
    assert status == 200 or 400 <= status < 500, where
    if status == 200:
        assert isinstance(answer["result"], dict), where
    else:
        assert is_error(answer), where
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], where
