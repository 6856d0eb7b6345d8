"""Fixtures of the end-to-end suite: a cowrite application started in-process with
``build_app`` on an ephemeral port, over a real store, and official clients.

``store_spec`` is parametrised over ``sqlite`` (a file in ``tmp_path``) and
``postgres`` (the real server at ``COWRITE_TEST_POSTGRES_DSN``, default
``postgresql://postgres@127.0.0.1:5432/test``, each test in a fresh schema
dropped afterwards, as in tests/contract).  Without a reachable PostgreSQL the
postgres cases skip, except under ``CI`` where they fail.  Tests where the
store does not matter use ``sqlite_spec``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from e2e_support import Client, NodeClient, PyClient, Server, StoreSpec

from pg_support import throwaway_schema


@pytest.fixture(params=["sqlite", "postgres"])
async def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreSpec]:
    if request.param == "sqlite":
        yield StoreSpec("sqlite", path=str(tmp_path / "cowrite.db"))
        return
    async with throwaway_schema("cowrite_e2e_") as schema:
        yield StoreSpec("postgres", schema=schema)


@pytest.fixture
def sqlite_spec(tmp_path: Path) -> StoreSpec:
    return StoreSpec("sqlite", path=str(tmp_path / "cowrite.db"))


@pytest.fixture
async def make_server(tmp_path: Path) -> AsyncIterator[Callable[[StoreSpec], Awaitable[Server]]]:
    """``await make_server(spec)`` -> a started ``Server``; stopped at teardown."""
    servers: list[Server] = []

    async def make(spec: StoreSpec) -> Server:
        server = Server(spec, data_dir=str(tmp_path / "data"))
        servers.append(server)
        return await server.start()

    yield make
    for server in reversed(servers):
        await server.stop()


@pytest.fixture
async def servers() -> AsyncIterator[list[Server]]:
    """A list to put ``Server``s in (``e2e_support.two_instances``); they are
    stopped at teardown, the last started first."""
    made: list[Server] = []
    yield made
    for server in reversed(made):
        await server.stop()


@pytest.fixture
async def server(
    store_spec: StoreSpec, make_server: Callable[[StoreSpec], Awaitable[Server]]
) -> Server:
    """A server over both stores."""
    return await make_server(store_spec)


@pytest.fixture
async def sqlite_server(
    sqlite_spec: StoreSpec, make_server: Callable[[StoreSpec], Awaitable[Server]]
) -> Server:
    """A server over SQLite, for tests where the store plays no part."""
    return await make_server(sqlite_spec)


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """``await make_client("node", "bob", ["polling"])`` -> a ``Client`` (not connected).

    Every client is closed at teardown; Node drivers' stderr is printed on failure.
    """
    clients: list[Client] = []

    async def make(kind: str, label: str, transports: list[str] | None = None) -> Client:
        transports = transports or ["websocket"]
        client: Client
        if kind == "python":
            client = PyClient(label, transports)
        elif kind == "node":
            node = NodeClient(label, transports)
            clients.append(node)
            await node.start()
            return node
        else:
            raise ValueError(kind)
        clients.append(client)
        return client

    yield make
    for client in reversed(clients):
        await client.close()
        if isinstance(client, NodeClient) and (client.fatal or client.stderr.strip()):
            print(
                f"{client!r} fatal={client.fatal} stderr:\n{client.stderr.decode(errors='replace')}"
            )
