"""The client's errors, grafted onto cowrite's one exception tree (``cowrite.errors``)::

    CowriteError
    ├── LocalError
    │   └── ClientClosed            the application closed the client or the document;
    │                               what was still pending fails with it
    └── RemoteError
        ├── ConnectTimeout          connect() found no server within first_connect_timeout
        └── ClientError             the server refused something; ``code`` is its error code
            ├── ConnectionRejected  CONNECT_ERROR: the server refused the connection (terminal)
            │   └── AuthenticationFailed   code token_missing | token_invalid | token_expired
            ├── AccessDenied        access_denied / access-revoked for one document (terminal
            │                       for that document)
            └── OperationRejected   one submission refused for good (read_only,
                                    payload_too_large, invalid_payload, ...)

Transient failures (connection lost, ``unavailable``, ``rate_limited``) never
reach the application: the client retries them.
"""

from __future__ import annotations

from typing import Any

from cowrite.errors import LocalError, RemoteError


class ClientClosed(LocalError):
    """The client or the document session was closed by the application."""


class ConnectTimeout(RemoteError, TimeoutError):
    """``connect()`` (or ``async with``) did not reach the server within
    ``ClientSettings.first_connect_timeout``; ``attempts`` were made and
    ``last_error`` says why the last one failed."""

    def __init__(self, url: str, timeout: float, attempts: int, last_error: str | None) -> None:
        reason = f"; last attempt: {last_error}" if last_error else ""
        super().__init__(
            f"could not connect to {url} within {timeout:g} s ({attempts} attempts){reason}"
        )
        self.url = url
        self.attempts = attempts
        self.last_error = last_error


class ClientError(RemoteError):
    """The server refused a request; ``code`` is the error code it sent."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class ConnectionRejected(ClientError):
    """The server answered the namespace CONNECT with CONNECT_ERROR.  Not retried."""

    def __init__(self, code: str, message: str = "", data: Any = None) -> None:
        super().__init__(code, message)
        self.data = data


class AuthenticationFailed(ConnectionRejected):
    """``Authentication failed``; ``code`` is ``token_missing``, ``token_invalid`` or
    ``token_expired``."""


class AccessDenied(ClientError):
    """The user may not (or may no longer) open ``document_id``."""

    def __init__(self, document_id: str, code: str = "access_denied", message: str = "") -> None:
        super().__init__(code, message or f"access to {document_id!r} denied")
        self.document_id = document_id


class OperationRejected(ClientError):
    """The server refused one submission (or presence update) for good."""

    def __init__(self, document_id: str, code: str, message: str = "") -> None:
        super().__init__(code, message)
        self.document_id = document_id
