"""The demo page and, in development mode only, the token endpoint it uses.

Routes (plain HTTP on the server's port, next to ``/socket.io/``):

``GET /``                 the page (``index.html``)
``GET /static/<asset>``   its bundle and style sheet (``ASSETS``)
``GET /dev/token``        development mode only (404 otherwise):
                          ``?user=ID&name=NAME&doc=DOC`` -> ``{"token", "role",
                          "linkRole", ...}``, a JWT for ``ID`` without a ``docs``
                          claim: the roles stored on the server apply.

Roles in the demo are the stored ones, as for any client.  The first person to
ask for a document that does not exist creates it and owns it; the document is
then shared with "anyone with the link" as ``editor`` (a stored grant to the
pseudo user ``*``, ``LINK_USER``), so a second window edits along at once.
Someone without a role on an existing document gets the link role when there
is one (stored for them: from then on ``cowrite grant``/``revoke`` and the
owner change it), else nothing: the page shows "no access".  The owner changes
the link role from the page (``share-document`` with ``userId: "*"``).

The page is built by esbuild from ``web/`` into ``STATIC_DIR`` (gitignored;
``make serve`` builds it).  Files are read on each request, so a rebuild
(``npm run watch`` in ``web/``) shows on reload; they are a few kilobytes read
from the local disk, and only the demo pays for it.

The token endpoint hands out a signed token for any user it is asked for, so
it answers only requests that come over loopback *and* name a loopback host:
a development server started with ``--host 0.0.0.0`` does not mint tokens for
the network, and a page on another site that rebinds its DNS name to
127.0.0.1 (DNS rebinding) cannot read one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import parse_qs

import orjson

from cowrite.errors import CowriteError
from cowrite.server.connection import Connection, Request

__all__ = [
    "ASSETS",
    "LINK_USER",
    "STATIC_DIR",
    "DevAccess",
    "DevMint",
    "admit",
    "install_web_routes",
]

log = logging.getLogger("cowrite.web")

#: Where ``web/build.mjs`` writes the page (inside the package: found from a
#: checkout and from an editable install alike).
STATIC_DIR: Final = Path(__file__).resolve().parent / "web_dist"

#: The files under ``/static/`` and their media types.
ASSETS: Final = {
    "app.js": "text/javascript; charset=utf-8",
    "app.js.map": "application/json",
    "style.css": "text/css; charset=utf-8",
}

#: ``mint(user_id, name)`` -> a JWT (no ``docs`` claim) the server's verifier accepts.
DevMint = Callable[[str, str], str]

#: The pseudo user whose stored role is what "anyone with the link" gets in the demo.
LINK_USER: Final = "*"


class DevAccess(Protocol):
    """What the token endpoint needs from the store (``OperationStore`` has it)."""

    async def document_exists(self, document_id: str) -> bool: ...

    async def create_document(self, document_id: str, owner_id: str) -> bool: ...

    async def get_role(self, document_id: str, user_id: str) -> Any: ...

    async def set_role(self, document_id: str, user_id: str, role: Any) -> None: ...


# The page loads only its own script and style and talks only to its origin
# (CSP Level 3: 'self' also covers ws:// and wss:// to the same host and port).
_PAGE_HEADERS: Final = (
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)
_ASSET_HEADERS: Final = (("X-Content-Type-Options", "nosniff"),)

_USER_ID: Final = re.compile(r"[A-Za-z0-9._@:-]{1,64}")
_MAX_NAME: Final = 64
_MAX_DOC_ID: Final = 256  # as core/service.py

_NOT_BUILT: Final = (
    b"The demo page is not built. Run `make serve` (or: cd web && npm ci && npm run build).\n"
)


class RouteTable(Protocol):
    """What routes are added to (``SocketServer`` implements it)."""

    def add_route(self, path: str, handler: Callable[[Connection, Request], None]) -> None: ...


def install_web_routes(
    server: RouteTable,
    *,
    dev_mode: bool,
    mint: DevMint,
    access: DevAccess | None = None,
    static_dir: Path = STATIC_DIR,
) -> None:
    """Serve the demo page from ``static_dir``; add ``/dev/token`` when ``dev_mode``
    (``access``, the store, is then required)."""
    server.add_route("/", _page_handler(static_dir))
    for name, media_type in ASSETS.items():
        server.add_route(f"/static/{name}", _asset_handler(static_dir / name, media_type))
    if dev_mode:
        if access is None:
            raise ValueError("the development token endpoint needs the store (access)")
        server.add_route("/dev/token", _token_handler(mint, access))


# One admission at a time per document: creating a document and granting its
# link role are two store calls, and a second person arriving between them
# must not find a document without its link role (denied).  An entry lives as
# long as a caller holds or waits for its lock.
_admitting: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


async def admit(access: DevAccess, document_id: str, user_id: str) -> tuple[str | None, str | None]:
    """The demo's sharing rules (see the module docstring): ``(role, link_role)``
    of ``user_id`` on ``document_id``, creating or granting as they say."""
    lock = _admitting.get(document_id)
    if lock is None:
        lock = _admitting[document_id] = asyncio.Lock()
    async with lock:
        return await _admit(access, document_id, user_id)


async def _admit(
    access: DevAccess, document_id: str, user_id: str
) -> tuple[str | None, str | None]:
    from cowrite.backends.store import Role

    created = not await access.document_exists(document_id) and await access.create_document(
        document_id, user_id
    )
    if created:
        await access.set_role(document_id, LINK_USER, Role.EDITOR)
        return Role.OWNER.value, Role.EDITOR.value
    link = await access.get_role(document_id, LINK_USER)
    link_role = link.value if link is not None else None
    role = await access.get_role(document_id, user_id)
    if role is None and link is not None:
        await access.set_role(document_id, user_id, link)
        role = link
    return (role.value if role is not None else None), link_role


def _only_get(conn: Connection, req: Request) -> bool:
    if req.method == "GET":
        return True
    # No HEAD: Connection.respond always writes the body it is given.
    conn.respond(405, b"method not allowed\n", headers=[("Allow", "GET")])
    return False


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _page_handler(static_dir: Path) -> Callable[[Connection, Request], None]:
    index = static_dir / "index.html"

    def page(conn: Connection, req: Request) -> None:
        if not _only_get(conn, req):
            return
        body = _read(index)
        if body is None:
            conn.respond(503, _NOT_BUILT)
            return
        conn.respond(200, body, content_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    return page


def _asset_handler(path: Path, media_type: str) -> Callable[[Connection, Request], None]:
    def asset(conn: Connection, req: Request) -> None:
        if not _only_get(conn, req):
            return
        body = _read(path)
        if body is None:
            conn.respond(404, b"not found")
            return
        conn.respond(200, body, content_type=media_type, headers=_ASSET_HEADERS)

    return asset


def _json(conn: Connection, status: int, value: object) -> None:
    conn.respond(
        status,
        orjson.dumps(value),
        content_type="application/json",
        headers=_ASSET_HEADERS,
    )


def _is_loopback_address(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def _is_loopback_host(host: str | None) -> bool:
    """``Host`` (with or without a port) names a loopback interface."""
    if not host:
        return False
    host = host.strip().lower()
    if host.startswith("["):
        return host.split("]")[0] == "[::1"
    name = host.split(":")[0]
    if name in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.IPv4Address(name).is_loopback
    except ValueError:
        return False


def _token_handler(mint: DevMint, access: DevAccess) -> Callable[[Connection, Request], None]:
    def token(conn: Connection, req: Request) -> None:
        if not _only_get(conn, req):
            return
        if not (_is_loopback_address(conn.client_addr) and _is_loopback_host(req.header("host"))):
            _json(conn, 403, {"error": "the development token endpoint answers loopback only"})
            return
        query = parse_qs(req.query.decode("latin-1"), encoding="utf-8", errors="replace")
        user = query.get("user", [""])[0]
        name = query.get("name", [""])[0].strip() or user
        doc = query.get("doc", [""])[0]
        if not _USER_ID.fullmatch(user):
            _json(conn, 400, {"error": "user: 1-64 characters of A-Z a-z 0-9 . _ @ : -"})
            return
        if len(name) > _MAX_NAME or not name.isprintable():
            _json(conn, 400, {"error": f"name: at most {_MAX_NAME} printable characters"})
            return
        if doc and (len(doc) > _MAX_DOC_ID or not doc.isprintable()):
            _json(conn, 400, {"error": f"doc: at most {_MAX_DOC_ID} printable characters"})
            return
        try:
            minted = mint(user, name)
        except CowriteError as exc:
            # For instance an RS256 configuration: the server holds no private key.
            log.warning("dev token not minted: %s", exc)
            _json(conn, 500, {"error": f"cannot mint a token here: {exc}"})
            return
        answer: dict[str, Any] = {"token": minted, "userId": user, "name": name}
        if not doc:
            _json(conn, 200, answer)
            return

        async def share() -> None:
            try:
                role, link_role = await admit(access, doc, user)
            except Exception as exc:  # the store is down: the page retries
                log.warning("dev token: roles on %r not read: %s", doc, exc)
                _json(conn, 503, {"error": "the document store is unavailable"})
                return
            answer.update(documentId=doc, role=role, linkRole=link_role)
            _json(conn, 200, answer)

        task = asyncio.get_running_loop().create_task(share())
        _pending.add(task)
        task.add_done_callback(_pending.discard)

    return token


_pending: set[asyncio.Task[None]] = set()
