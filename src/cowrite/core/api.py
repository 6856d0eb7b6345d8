"""The server API's domain side: what a backend may do without a socket.

``ServerApi.call(method, params)`` validates ``params`` (a JSON object) and
acts through ``CollabService``, exactly as the client events do:

``publish``     an operation on behalf of a named user: stored, ordered and fanned
                out like an ``edit-operation`` (same encoding and size limits),
                idempotent by ``clientOpId``; the document must exist.
``history``     a page of the log after ``since`` (``ops``, ``head``, ``more``).
``head``        the document's last ``seq``.
``presence``    the roster (every instance: the presence store is shared).
``grant``       give a user a role (what ``share-document`` does, enforced at once
                on every instance through the broker's ``RoleMessage``); granting
                ``owner`` on a document that does not exist creates it.
``revoke``      take it away (members are removed with ``access-revoked``).
``disconnect``  close every connection of a user on every instance
                (``DisconnectMessage``); they get ``server-disconnect {code, reason}``
                first.
``info``        open documents and connections of every instance: an
                ``InfoRequest`` to all, answers gathered for at most ``timeout``
                seconds (fewer when every instance the broker reached answered).

The API acts with the server's authority: no role of the named user is checked
(as Centrifugo's server API skips channel permissions).  Errors are ``ApiError``
with an HTTP status hint (4xx for the caller's mistakes, 503 when the store is
unavailable); the HTTP adapter is ``server/api.py``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from cowrite.backends.broker import DisconnectMessage, InfoReply, InfoRequest, InstanceMessage
from cowrite.backends.store import Role, StoreError, UnknownDocument
from cowrite.core.service import CollabService, _document_id, _seq
from cowrite.errors import RemoteError

log = logging.getLogger("cowrite.api")

#: Documents listed per instance in ``info`` (the counts are always exact).
INFO_DOCUMENT_LIMIT = 1000
_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_MAX_REASON = 256

Result = dict[str, Any]


class ApiError(RemoteError):
    """A server API request that cannot be served: ``status`` is the HTTP
    status it gets, ``code`` and ``message`` its JSON error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_params", message)


def _doc(params: dict[str, Any]) -> str:
    doc_id = _document_id(params.get("documentId"))
    if doc_id is None:
        raise _invalid("documentId must be a printable string of 1-256 characters")
    return doc_id


def _user(params: dict[str, Any]) -> str:
    user_id = _document_id(params.get("userId"))  # the same rule as document ids
    if user_id is None:
        raise _invalid("userId must be a printable string of 1-256 characters")
    return user_id


def _only(params: dict[str, Any], *allowed: str) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise _invalid(f"unknown parameter(s): {', '.join(unknown)}")


class ServerApi:
    """The server API of one instance.  Also answers other instances'
    ``DisconnectMessage`` and ``InfoRequest`` (set as the service's
    ``instance_handler``), so every instance must have one, API key or not."""

    def __init__(self, service: CollabService, *, timeout: float = 1.0) -> None:
        self.service = service
        self.timeout = timeout
        self._waiting: dict[str, Callable[[InfoReply], None]] = {}
        self._known_docs: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.methods: dict[str, Callable[[dict[str, Any]], Awaitable[Result]]] = {
            "publish": self.publish,
            "history": self.history,
            "head": self.head,
            "presence": self.presence,
            "grant": self.grant,
            "revoke": self.revoke,
            "disconnect": self.disconnect,
            "info": self.info,
        }
        service.instance_handler = self.on_instance_message

    async def call(self, method: str, params: Any) -> Result:
        """Run ``method``; raises ``ApiError``."""
        handler = self.methods.get(method)
        if handler is None:
            raise ApiError(404, "unknown_method", f"no API method {method!r}")
        if not isinstance(params, dict):
            raise ApiError(400, "invalid_params", "the body must be a JSON object")
        try:
            return await handler(params)
        except UnknownDocument as exc:
            raise ApiError(404, "unknown_document", "the document does not exist") from exc
        except StoreError as exc:
            log.warning("API %s: store unavailable: %s", method, exc)
            raise ApiError(503, "unavailable", "the document store is unavailable") from exc

    # -- methods -------------------------------------------------------------

    async def publish(self, params: dict[str, Any]) -> Result:
        _only(params, "documentId", "userId", "operation", "clientOpId")
        doc_id, user_id = _doc(params), _user(params)
        if "operation" not in params:
            raise _invalid("operation is required")
        client_op_id = params.get("clientOpId")
        if isinstance(client_op_id, int) and not isinstance(client_op_id, bool):
            client_op_id = str(client_op_id)
        if client_op_id is not None and (
            not isinstance(client_op_id, str) or not 0 < len(client_op_id) <= 128
        ):
            raise _invalid("clientOpId must be a string of 1-128 characters")
        await self._require_document(doc_id)
        ack = await self.service.publish(doc_id, user_id, client_op_id, params["operation"])
        if not ack["ok"]:
            code = ack["error"]["code"]
            status = {"payload_too_large": 413, "unavailable": 503}.get(code, 400)
            raise ApiError(status, code, ack["error"]["message"])
        result: Result = {"documentId": doc_id, "seq": ack["seq"]}
        if ack.get("duplicate"):
            result["duplicate"] = True
        return result

    async def history(self, params: dict[str, Any]) -> Result:
        _only(params, "documentId", "since", "limit")
        doc_id = _doc(params)
        settings = self.service.settings
        since = _seq(params.get("since"))
        limit = _seq(params.get("limit"), settings.page_size)
        if since is None or limit is None or limit == 0:
            raise _invalid("since must be a whole number >= 0 and limit >= 1")
        ops, head, more = await self.service.history(
            doc_id, since, min(limit, settings.max_page_size)
        )
        return {"documentId": doc_id, "ops": ops, "head": head, "more": more}

    async def head(self, params: dict[str, Any]) -> Result:
        _only(params, "documentId")
        doc_id = _doc(params)
        return {"documentId": doc_id, "head": await self.service.store.head(doc_id)}

    async def presence(self, params: dict[str, Any]) -> Result:
        _only(params, "documentId")
        doc_id = _doc(params)
        await self._require_document(doc_id)
        return {"documentId": doc_id, "presence": await self.service.roster(doc_id)}

    async def grant(self, params: dict[str, Any]) -> Result:
        _only(params, "documentId", "userId", "role")
        doc_id, user_id = _doc(params), _user(params)
        raw = params.get("role")
        if raw not in tuple(Role):
            raise _invalid("role must be owner, editor or viewer")
        role = Role(raw)
        if role is Role.OWNER and await self.service.store.create_document(doc_id, user_id):
            self._known_docs.add(doc_id)
            return {"documentId": doc_id, "userId": user_id, "role": role.value, "created": True}
        await self.service.change_role(doc_id, user_id, role)
        return {"documentId": doc_id, "userId": user_id, "role": role.value}

    async def revoke(self, params: dict[str, Any]) -> Result:
        _only(params, "documentId", "userId")
        doc_id, user_id = _doc(params), _user(params)
        await self._require_document(doc_id)
        await self.service.change_role(doc_id, user_id, None)
        return {"documentId": doc_id, "userId": user_id, "role": None}

    async def disconnect(self, params: dict[str, Any]) -> Result:
        _only(params, "userId", "code", "reason")
        user_id = _user(params)
        code = params.get("code", "disconnected")
        reason = params.get("reason", "disconnected by the server")
        if not isinstance(code, str) or _CODE.fullmatch(code) is None:
            raise _invalid("code must be 1-64 letters, digits, '_', '.' or '-'")
        if not isinstance(reason, str) or len(reason) > _MAX_REASON or not reason.isprintable():
            raise _invalid(f"reason must be a printable string of at most {_MAX_REASON} characters")
        here = self.service.disconnect_user(user_id, code, reason)
        message = DisconnectMessage(self.service.instance_id, user_id, code, reason)
        reached = await self.service.broker.publish_instances(message)
        return {"userId": user_id, "disconnected": here, "instancesNotified": reached}

    async def info(self, params: dict[str, Any]) -> Result:
        _only(params)
        request_id = uuid.uuid4().hex
        replies: list[InfoReply] = []
        all_in = asyncio.Event()
        expected = -1

        def collect(reply: InfoReply) -> None:
            replies.append(reply)
            if len(replies) == expected:
                all_in.set()

        self._waiting[request_id] = collect
        try:
            expected = await self.service.broker.publish_instances(
                InfoRequest(self.service.instance_id, request_id)
            )
            if len(replies) >= expected:
                all_in.set()
            try:
                async with asyncio.timeout(self.timeout):
                    await all_in.wait()
            except TimeoutError:
                pass
        finally:
            del self._waiting[request_id]
        own = self._local_reply(self.service.instance_id, request_id)
        instances = [_instance(r) for r in sorted([own, *replies], key=lambda r: r.origin)]
        return {
            "instances": instances,
            "connections": sum(i["connections"] for i in instances),
            "answered": len(replies) + 1,
            "expected": max(expected, 0) + 1,
        }

    # -- messages from other instances -----------------------------------------

    def on_instance_message(self, message: InstanceMessage) -> None:
        if isinstance(message, DisconnectMessage):
            self.service.disconnect_user(message.user_id, message.code, message.reason)
        elif isinstance(message, InfoRequest):
            reply = self._local_reply(message.origin, message.request_id)
            self._spawn(self.service.broker.publish_instances(reply))
        else:
            collect = self._waiting.get(message.request_id)
            if collect is not None:
                collect(message)

    # -- helpers -------------------------------------------------------------

    def _local_reply(self, target: str, request_id: str) -> InfoReply:
        connections, count, documents = self.service.local_info(INFO_DOCUMENT_LIMIT)
        return InfoReply(
            self.service.instance_id, target, request_id, connections, count, documents
        )

    async def _require_document(self, doc_id: str) -> None:
        if doc_id in self._known_docs:
            return
        if not await self.service.store.document_exists(doc_id):
            raise ApiError(404, "unknown_document", "the document does not exist")
        if len(self._known_docs) >= 100_000:
            self._known_docs.clear()
        self._known_docs.add(doc_id)  # documents are never deleted

    def _spawn(self, awaitable: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _instance(reply: InfoReply) -> dict[str, Any]:
    return {
        "instanceId": reply.origin,
        "connections": reply.connections,
        "documentCount": reply.document_count,
        "documents": [
            {"documentId": doc_id, "members": members}
            for doc_id, members in sorted(reply.documents.items())
        ],
    }
