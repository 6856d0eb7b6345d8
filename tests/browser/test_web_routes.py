"""The demo page's HTTP routes on a real ``cowrite serve`` (no browser needed).

``/dev/token`` exists only in development mode, mints a token the server
accepts with an ``editor`` grant on the requested document, and answers
loopback requests naming a loopback host only.
"""

from __future__ import annotations

import http.client
import json
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


def test_dev_token_grants_editor_on_the_document(serve: Callable[..., Served]) -> None:
    served = serve(dev=True)
    status, headers, body = get(served, "/dev/token?user=ada&name=Ada%20L.&doc=notes%2F1")
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    answer: dict[str, Any] = json.loads(body)
    assert answer["userId"] == "ada"
    assert answer["docs"] == {"notes/1": "editor"}
    secret = (Path(served.data_dir) / "dev-jwt-secret").read_text().strip()
    identity = TokenVerifier(AuthSettings(secret=secret, docs_claim=True)).verify(answer["token"])
    assert identity.user_id == "ada"
    assert identity.name == "Ada L."
    assert dict(identity.docs) == {"notes/1": "editor"}


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
