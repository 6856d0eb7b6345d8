"""The server API over HTTP: ``POST /api/<method>`` with a JSON body.

One path per method, as Centrifugo's HTTP API has (``/api/publish``...),
rather than one JSON-RPC endpoint: the method is visible in access logs and
proxy rules (a proxy can expose ``/api/history`` and not ``/api/disconnect``),
and errors map onto HTTP statuses with nothing wrapped.  The ``HttpServer``
hands every path under ``/api/`` to this adapter (an unknown method is a JSON
404).  What the methods do is ``core/api.py``; this module is the HTTP side:

- the key: ``X-API-Key: KEY`` or ``Authorization: apikey KEY``, compared in
  constant time (``hmac.compare_digest``); missing or wrong: 401;
- POST only (405 with ``Allow: POST``), a JSON object body (``Content-Type``
  ``application/json`` when given, else 415), at most ``max_body`` bytes (413);
- the answer: 200 ``{"result": {...}}`` or ``{"error": {"code", "message"}}``
  with the status the error carries (4xx for the caller's mistakes, 503 when
  the store is unavailable).  Unlike Centrifugo, whose method errors come back
  with HTTP 200, an error here is never a 2xx;
- binary parts of operations (Socket.IO attachments, e.g. Yjs updates), which
  JSON cannot carry, are ``{"$binary": "<base64>"}`` both ways.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
from collections.abc import Callable
from typing import Any

import orjson

from cowrite.core.api import ApiError, ServerApi
from cowrite.server.connection import Connection, Request
from cowrite.server.http import RouteHandler

log = logging.getLogger("cowrite.api")

PREFIX = "/api/"
JSON = "application/json"
#: Deeper than any operation core accepts (200 levels): deeper input is refused here.
MAX_DEPTH = 255


class HttpApi:
    """Serves ``api``'s methods under ``/api/`` of ``http``, guarded by ``key``."""

    def __init__(self, api: ServerApi, *, key: str, max_body: int) -> None:
        if not key:
            raise ValueError("the server API needs a key")
        self.api = api
        self._key = key.encode()
        self.max_body = max_body
        self._tasks: set[asyncio.Task[None]] = set()
        self.requests = 0
        self.refused = 0

    def install(self, add_prefix_route: Callable[[str, RouteHandler], None]) -> None:
        """Serve ``/api/`` (``HttpServer.add_prefix_route``, ``SocketServer.add_prefix_route``)."""
        add_prefix_route(PREFIX, self.handle)

    def handle(self, conn: Connection, req: Request) -> None:
        self.requests += 1
        method = req.path[len(PREFIX) :]
        refused = self._refusal(req)
        if refused is not None:
            self.refused += 1
            status, code, message, headers = refused
            _error(conn, status, code, message, headers)
            return
        try:
            params = from_json(orjson.loads(req.body))
        except orjson.JSONDecodeError:
            self.refused += 1
            _error(conn, 400, "invalid_json", "the body is not JSON")
            return
        except ApiError as exc:
            self.refused += 1
            _error(conn, exc.status, exc.code, exc.message)
            return
        task = asyncio.get_running_loop().create_task(self._answer(method, params, conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _refusal(self, req: Request) -> tuple[int, str, str, list[tuple[str, str]]] | None:
        if not self._authorized(req):
            return (
                401,
                "unauthorized",
                "a valid API key is required",
                [("WWW-Authenticate", "apikey")],
            )
        if req.method != "POST":
            return 405, "method_not_allowed", "use POST", [("Allow", "POST")]
        content_type = req.header("content-type")
        if content_type is not None and content_type.split(";")[0].strip().lower() != JSON:
            return 415, "unsupported_media_type", "the body must be application/json", []
        if len(req.body) > self.max_body:
            return 413, "payload_too_large", f"the body exceeds {self.max_body} bytes", []
        return None

    def _authorized(self, req: Request) -> bool:
        given = req.header("x-api-key")
        if given is None:
            auth = req.header("authorization") or ""
            scheme, _, rest = auth.partition(" ")
            if scheme.lower() != "apikey":
                return False
            given = rest.strip()
        return hmac.compare_digest(given.encode("latin-1"), self._key)

    async def _answer(self, method: str, params: Any, conn: Connection) -> None:
        try:
            result = await self.api.call(method, params)
        except ApiError as exc:
            self.refused += 1
            _error(conn, exc.status, exc.code, exc.message)
            return
        except Exception:
            log.exception("API %s failed", method)
            _error(conn, 500, "internal", "internal error")
            return
        conn.respond(200, orjson.dumps({"result": result}, default=_to_json), content_type=JSON)


def from_json(value: Any, depth: int = 0) -> Any:
    """``value`` with every ``{"$binary": "<base64>"}`` turned into bytes."""
    if depth > MAX_DEPTH:
        raise ApiError(400, "invalid_params", f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, list):
        return [from_json(v, depth + 1) for v in value]
    if isinstance(value, dict):
        if len(value) == 1 and "$binary" in value:
            raw = value["$binary"]
            try:
                if not isinstance(raw, str):
                    raise ValueError("not a string")
                return base64.b64decode(raw, validate=True)
            except (ValueError, binascii.Error):
                raise ApiError(400, "invalid_params", "$binary must be base64") from None
        return {k: from_json(v, depth + 1) for k, v in value.items()}
    return value


def _to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$binary": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"{type(value).__name__} is not JSON")


def _error(
    conn: Connection,
    status: int,
    code: str,
    message: str,
    headers: list[tuple[str, str]] | None = None,
) -> None:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    conn.respond(status, body, content_type=JSON, headers=headers or ())
