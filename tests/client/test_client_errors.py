"""Terminal errors against a live server: surfaced with the server's code, never retried."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest
from client_support import WAIT, eventually, token

from cowrite.client import (
    AccessDenied,
    AuthenticationFailed,
    ClientError,
    ClientSettings,
    ConnectTimeout,
    CowriteClient,
    Operation,
    OperationRejected,
)
from cowrite.errors import RemoteError


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        ("", "token_missing"),
        ("not-a-jwt", "token_invalid"),
        (token("alice", secret="another-secret-" + "q" * 32), "token_invalid"),
        (token("alice", ttl=10, now=time.time() - 3600), "token_expired"),
    ],
)
async def test_authentication_failure_is_terminal(
    make_client: Callable[..., CowriteClient], bad: str, code: str
) -> None:
    client = make_client("alice", token=bad)
    with pytest.raises(AuthenticationFailed) as info:
        await asyncio.wait_for(client.connect(), WAIT)
    assert info.value.code == code and isinstance(info.value, RemoteError)
    assert client.metrics.connect_attempts == 1  # not retried
    assert client.failure is info.value
    with pytest.raises(AuthenticationFailed):
        await client.open("doc")


async def test_authentication_failure_on_reconnect_ends_every_document(
    make_client: Callable[..., CowriteClient],
) -> None:
    tokens = [token("alice"), "revoked-token"]

    async def provider() -> str:
        return tokens.pop(0) if len(tokens) > 1 else tokens[0]

    client = make_client("alice", token_provider=provider)
    await asyncio.wait_for(client.connect(), WAIT)
    doc = await asyncio.wait_for(client.open("auth-later"), WAIT)

    async def consume() -> list[Operation]:
        return [op async for op in doc.operations()]

    consumer = asyncio.ensure_future(consume())
    client.drop_connection()
    with pytest.raises(AuthenticationFailed) as info:
        await asyncio.wait_for(consumer, WAIT)
    assert info.value.code == "token_invalid"
    assert client.failure is info.value and doc.closed
    assert client.metrics.connect_attempts == 2
    with pytest.raises(AuthenticationFailed):
        await doc.submit("x")


async def test_access_denied_is_terminal_for_that_document_only(
    make_client: Callable[..., CowriteClient],
) -> None:
    owner = make_client("alice")
    await asyncio.wait_for(owner.connect(), WAIT)
    await asyncio.wait_for(owner.open("private"), WAIT)

    carol = make_client("carol")
    await asyncio.wait_for(carol.connect(), WAIT)
    with pytest.raises(AccessDenied) as info:
        await asyncio.wait_for(carol.open("private"), WAIT)
    assert (info.value.document_id, info.value.code) == ("private", "access_denied")
    assert "private" not in carol.documents and carol.connected
    mine = await asyncio.wait_for(carol.open("carols"), WAIT)
    assert mine.role == "owner"


async def test_access_revoked_ends_the_session(
    make_client: Callable[..., CowriteClient],
) -> None:
    owner = make_client("alice")
    await asyncio.wait_for(owner.connect(), WAIT)
    alice = await asyncio.wait_for(owner.open("shared"), WAIT)
    await alice.share("bob", "editor")
    bob_client = make_client("bob")
    await asyncio.wait_for(bob_client.connect(), WAIT)
    bob = await asyncio.wait_for(bob_client.open("shared"), WAIT)
    assert await bob.submit("hello") == 1
    with pytest.raises(AccessDenied):  # only an owner shares; the session goes on
        await bob.share("carol", "viewer")
    assert not bob.closed

    async def consume() -> list[Operation]:
        return [op async for op in bob.operations()]

    consumer = asyncio.ensure_future(consume())
    await alice.share("bob", None)
    with pytest.raises(AccessDenied) as info:
        await asyncio.wait_for(consumer, WAIT)
    assert info.value.code == "access_revoked" and info.value.document_id == "shared"
    assert "shared" not in bob_client.documents and bob_client.connected
    with pytest.raises(AccessDenied):
        await bob.submit("again")


async def test_read_only_submission_is_rejected_not_retried(
    make_client: Callable[..., CowriteClient],
) -> None:
    owner = make_client("alice")
    await asyncio.wait_for(owner.connect(), WAIT)
    alice = await asyncio.wait_for(owner.open("ro"), WAIT)
    await alice.share("bob", "viewer")
    viewer = make_client("bob")
    await asyncio.wait_for(viewer.connect(), WAIT)
    bob = await asyncio.wait_for(viewer.open("ro"), WAIT)
    with pytest.raises(OperationRejected) as info:
        await asyncio.wait_for(bob.submit({"x": 1}), WAIT)
    assert info.value.code == "read_only" and isinstance(info.value, ClientError)
    assert viewer.metrics.submissions_sent == 1 and bob.pending == 0
    # The session itself goes on: alice's edits still reach bob.
    got: list[Operation] = []
    bob.on_operation(got.append)
    await alice.submit("visible")
    await eventually(lambda: [op.operation for op in got] == ["visible"], what="alice's op")


async def test_too_large_operation_is_rejected(make_client: Callable[..., CowriteClient]) -> None:
    client = make_client("alice")
    await asyncio.wait_for(client.connect(), WAIT)
    doc = await asyncio.wait_for(client.open("big"), WAIT)
    with pytest.raises(OperationRejected) as info:
        await asyncio.wait_for(doc.submit("x" * 70_000), WAIT)
    assert info.value.code == "payload_too_large"
    with pytest.raises(TypeError):
        await doc.submit(object())


async def test_nothing_listening_logs_every_attempt_and_times_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A wrong port does not hang silently: each failed attempt is a WARNING
    and ``first_connect_timeout`` ends ``connect()`` with ``ConnectTimeout``."""
    import socket

    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        settings = ClientSettings(backoff_base=0.05, backoff_cap=0.2, first_connect_timeout=1.0)
        client = CowriteClient(f"http://127.0.0.1:{port}", token=token("alice"), settings=settings)
        with (
            caplog.at_level(logging.WARNING, logger="cowrite.client"),
            pytest.raises(ConnectTimeout) as info,
        ):
            await asyncio.wait_for(client.connect(), WAIT)
        await client.close()
    failed = [r for r in caplog.records if "cannot connect to" in r.getMessage()]
    assert client.metrics.connect_attempts >= 2
    # Every attempt but the one the timeout cut short was logged.
    assert len(failed) >= client.metrics.connect_attempts - 1 >= 1
    assert f"127.0.0.1:{port}" in failed[0].getMessage()
    assert isinstance(info.value, TimeoutError)
    assert f"127.0.0.1:{port}" in str(info.value) and "attempts" in str(info.value)
    assert info.value.last_error is not None
