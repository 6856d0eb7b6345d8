"""The demo page's HTTP routes on a real ``cowrite serve`` (no browser needed).

``/dev/token`` exists only in development mode, mints a token the server
accepts without a ``docs`` claim (the stored roles apply: the first person owns
a new document, others get the owner's link role), and answers loopback
requests naming a loopback host only.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from browser_support import Served

from cowrite.auth import AuthSettings, TokenVerifier


def get(
    served: Served, path: str, *, host: str | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=5.0)
    try:
        headers = {"Host": host} if host is not None else {}
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_production_has_no_token_endpoint(serve: Callable[..., Served]) -> None:
    served = serve(dev=False)
    status, _, _ = get(served, "/dev/token?user=ada&name=Ada&doc=demo")
    assert status == 404
    # The page itself is served in both modes (in production it takes #token=...).
    status, headers, _ = get(served, "/")
    assert status in (200, 503)
    if status == 200:
        assert headers["content-type"].startswith("text/html")


def token_for(served: Served, user: str, doc: str) -> dict[str, Any]:
    status, headers, body = get(served, f"/dev/token?user={user}&name={user.title()}&doc={doc}")
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    answer: dict[str, Any] = json.loads(body)
    return answer


def verify(served: Served, token: str) -> Any:
    secret = (Path(served.data_dir) / "dev-jwt-secret").read_text().strip()
    return TokenVerifier(AuthSettings(secret=secret, docs_claim=True)).verify(token)


def test_dev_tokens_carry_no_docs_claim_and_stored_roles_apply(
    serve: Callable[..., Served],
) -> None:
    served = serve(dev=True)
    # The first person creates the document and owns it; it is shared with
    # anyone who has the link as editor.
    ada = token_for(served, "ada", "notes%2F1")
    assert (ada["role"], ada["linkRole"], ada["documentId"]) == ("owner", "editor", "notes/1")
    identity = verify(served, ada["token"])
    assert identity.user_id == "ada" and identity.name == "Ada"
    assert dict(identity.docs) == {}  # no claim: nothing overrides the stored roles
    # The second gets the link role, stored for them.
    grace = token_for(served, "grace", "notes%2F1")
    assert (grace["role"], grace["linkRole"]) == ("editor", "editor")
    assert dict(verify(served, grace["token"]).docs) == {}


async def test_stored_roles_decide_in_the_demo(serve: Callable[..., Served]) -> None:
    """cowrite grant/revoke change what the demo's users may do (stored roles),
    the owner's link role decides for newcomers, and a document nobody shared
    with a newcomer (created with the CLI) is refused."""
    import socketio  # python-socketio, the official Python client

    served = serve(dev=True)
    token_for(served, "ada", "doc-1")  # ada owns doc-1, link role editor
    assert cli(served, "grant", "doc-1", "bob", "viewer").returncode == 0
    bob = token_for(served, "bob", "doc-1")
    assert bob["role"] == "viewer"  # the stored grant, not the link role

    async def join(token: str, doc: str) -> dict[str, Any]:
        client = socketio.AsyncClient(reconnection=False)
        await client.connect(served.base, auth={"token": token}, transports=["websocket"])
        try:
            ack: dict[str, Any] = await client.call("join-document", doc, timeout=10)
            if ack.get("ok"):
                ack["edit"] = await client.call(
                    "edit-operation",
                    {"documentId": doc, "operation": {"i": 1}, "clientOpId": "x1"},
                    timeout=10,
                )
            return ack
        finally:
            await client.disconnect()

    ack = await join(bob["token"], "doc-1")
    assert ack["ok"] and ack["role"] == "viewer"
    assert ack["edit"]["error"]["code"] == "read_only"

    # The owner shares the link as viewer only: a newcomer is a viewer.
    owner = socketio.AsyncClient(reconnection=False)
    await owner.connect(served.base, auth={"token": token_for(served, "ada", "doc-1")["token"]})
    try:
        shared = await owner.call(
            "share-document", {"documentId": "doc-1", "userId": "*", "role": "viewer"}, timeout=10
        )
    finally:
        await owner.disconnect()
    assert shared["ok"], shared
    carol = token_for(served, "carol", "doc-1")
    assert (carol["role"], carol["linkRole"]) == ("viewer", "viewer")

    # Revoked while the link is shared: the command says that bob gets the
    # link role again on his next visit, and how to stop sharing the link.
    revoked = cli(served, "revoke", "doc-1", "bob")
    assert revoked.returncode == 0
    assert "anyone with the link" in revoked.stdout and "revoke doc-1 '*'" in revoked.stdout
    assert token_for(served, "bob", "doc-1")["role"] == "viewer"
    assert cli(served, "revoke", "doc-1", "*").returncode == 0
    assert cli(served, "revoke", "doc-1", "bob").returncode == 0
    assert token_for(served, "bob", "doc-1")["role"] is None

    # A document created with the CLI has no link role: newcomers are refused.
    assert (
        cli(served, "grant", "--create", "--owner", "ada", "doc-2", "bob", "editor").returncode == 0
    )
    dave = token_for(served, "dave", "doc-2")
    assert (dave["role"], dave["linkRole"]) == (None, None)
    ack = await join(dave["token"], "doc-2")
    assert ack["ok"] is False and ack["error"]["code"] == "access_denied"
    ack = await join(token_for(served, "bob", "doc-2")["token"], "doc-2")
    assert ack["ok"] and ack["role"] == "editor" and ack["edit"]["ok"]


def cli(served: Served, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COWRITE_")}
    return subprocess.run(
        [sys.executable, "-m", "cowrite", *args, "--data-dir", str(served.data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_dev_token_refusals(serve: Callable[..., Served]) -> None:
    served = serve(dev=True)
    assert get(served, "/dev/token")[0] == 400  # no user
    assert get(served, "/dev/token?user=a%20b")[0] == 400
    assert get(served, "/dev/token?user=" + "u" * 65)[0] == 400
    assert get(served, "/dev/token?user=ada&doc=" + "d" * 257)[0] == 400
    assert get(served, "/dev/token?user=ada", method="POST")[0] == 405
    # DNS rebinding: a loopback connection that names another host.
    assert get(served, "/dev/token?user=ada", host="evil.example")[0] == 403
    assert get(served, "/dev/token?user=ada", host="127.0.0.1.evil.example:80")[0] == 403
    assert get(served, "/dev/token?user=ada", host=f"localhost:{served.port}")[0] == 200
    assert get(served, "/dev/token?user=ada", host=f"[::1]:{served.port}")[0] == 200


def test_page_and_assets(serve: Callable[..., Served], web_build: Path) -> None:
    served = serve(dev=True)
    status, headers, body = get(served, "/?doc=demo")
    assert status == 200
    assert b'src="/static/app.js"' in body
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    for path, media_type in [
        ("/static/app.js", "text/javascript; charset=utf-8"),
        ("/static/style.css", "text/css; charset=utf-8"),
    ]:
        status, headers, body = get(served, path)
        assert status == 200, path
        assert headers["content-type"] == media_type
        assert headers["x-content-type-options"] == "nosniff"
        assert body
    assert get(served, "/static/nope.js")[0] == 404


async def test_people_opening_a_new_document_together_are_all_admitted(tmp_path: Path) -> None:
    """The first one creates the document and grants the link role; one
    arriving between those two store calls must not find it without its link
    role (it was denied: a race seen in the browser suite)."""
    from cowrite.backends.store import Role
    from cowrite.backends.store_sqlite import SqliteStore
    from cowrite.web import admit

    class SlowGrant(SqliteStore):
        # The real store; the link role's grant lands a moment later.
        async def set_role(self, document_id: str, user_id: str, role: Role) -> None:
            await asyncio.sleep(0.05)
            await super().set_role(document_id, user_id, role)

    store = SlowGrant(str(tmp_path / "demo.db"))
    await store.open()
    try:
        users = ["ada", "grace", "carol", "dan"]
        answers = await asyncio.gather(*(admit(store, "new-doc", u) for u in users))
    finally:
        await store.close()
    assert answers[0] == ("owner", "editor")
    assert answers[1:] == [("editor", "editor")] * 3
