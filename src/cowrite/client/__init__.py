"""cowrite's Python client SDK: reconnection, backoff, catch-up, exactly-once
submissions, over the server's Socket.IO v5 protocol.

::

    client = CowriteClient(url, token_provider=get_token, settings=ClientSettings())
    await client.connect()
    doc = await client.open("doc-1")        # joins, pages through sync until caught up
    doc.on_operation(apply)                 # or: async for op in doc.operations(): ...
    seq = await doc.submit({"insert": "x"}) # stored exactly once, even across reconnects
    await doc.set_presence({"cursor": 3}); doc.presence
    await doc.store_snapshot(seq, state)    # joiners with open(..., snapshot=True) start there
    await doc.close(); await client.close()

Modules: ``transport`` (the package's one client WebSocket, an asyncio
Protocol on websockets' sans-I/O client; ``cowrite loadtest`` uses it too),
``connection`` (the asyncio adapter: the transport speaking
``cowrite.protocol.client``, the sans-I/O client side of Engine.IO v4 /
Socket.IO v5), ``session`` (one document: exactly-once in-order delivery,
roster), ``client`` (reconnection, catch-up, resending), ``timing`` (backoff
with full jitter, edit pacing), ``settings``, ``errors``.

Why our own protocol core and not python-socketio's ``AsyncClient``
-------------------------------------------------------------------
Measured with ``tests/client/bench_receive.py 10000 sio cowrite raw`` (``cowrite
serve`` and the senders in other processes; CPU time of the receiving process
from the first to the 10,000th ``remote-edit``; 2-CPU VM, asyncio loop,
two runs each):

============================================  ===============
receiver                                      CPU per message
============================================  ===============
python-socketio 5.18.1 ``AsyncClient``        49.2, 59.3 µs
``CowriteClient`` (this package, full path)   11.1, 15.0 µs
websockets + ``cowrite.protocol`` alone       7.8, 7.6 µs
============================================  ===============

On the shared client WebSocket (``transport``: websockets' sans-I/O client
with a fast path for data frames) instead of websockets' asyncio client,
``tests/client/bench_receive.py 10000 cowrite`` gave 6.2, 4.1 µs against 9.1,
10.1 µs before, interleaved on the same (loaded) VM.

python-socketio costs 4-5x the CPU per received message (python-engineio
runs a task per incoming packet), which matters for the load tests
that run thousands of clients per machine; it would also add python-socketio,
python-engineio, aiohttp and their dependencies to the runtime dependencies,
and its own reconnection (no full jitter, no ``server-draining`` floor, no
terminal-error distinction) would have to be disabled anyway.  Our codecs
pass the official protocol suites (``tests/conformance/``), and the client
side needs only their decoder and encoder plus a small state machine.  The
cost: WebSocket transport only (no HTTP long-polling fallback; this SDK is
for services, bots and load tests, not browsers).  The official clients stay
the reference in the end-to-end tests.
"""

from cowrite.client.client import ClientMetrics, CowriteClient, TokenProvider
from cowrite.client.errors import (
    AccessDenied,
    AuthenticationFailed,
    ClientClosed,
    ClientError,
    ConnectionRejected,
    ConnectTimeout,
    OperationRejected,
)
from cowrite.client.session import (
    DocumentSession,
    DocumentSnapshot,
    Operation,
    Presence,
    PresenceChange,
)
from cowrite.client.settings import ClientSettings
from cowrite.client.timing import backoff_delay, reconnect_delay

__all__ = [
    "AccessDenied",
    "AuthenticationFailed",
    "ClientClosed",
    "ClientError",
    "ClientMetrics",
    "ClientSettings",
    "ConnectTimeout",
    "ConnectionRejected",
    "CowriteClient",
    "DocumentSession",
    "DocumentSnapshot",
    "Operation",
    "OperationRejected",
    "Presence",
    "PresenceChange",
    "TokenProvider",
    "backoff_delay",
    "reconnect_delay",
]
