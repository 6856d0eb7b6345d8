"""``cowrite loadtest``: many Socket.IO clients against cowrite, measured against
ADR-003's success metrics.

Modules
-------
``plan``      the frozen run plan; who is who (room, document, instance, editor, worker)
``client``    one client: the SDK's WebSocket (``cowrite.client.transport``) speaking
              ``cowrite.protocol.client``; reconnection with jittered exponential backoff
``worker``    a worker process: uvloop, up to 16,000 clients, one source address
``runner``    the coordinator: phases, server sampling (/proc), the optional kill
``kill``      ``KillSpec``, the fault a run injects (runner sends it, report describes it)
``report``    merging, ADR-003 checks, the JSON report and the text table
``hist``      a mergeable log-linear histogram (microseconds)
``cli``       the click command (``loadtest_command()``)

Choices
-------
* **Documents are pre-shared through the token's ``docs`` claim**: each
  minted token grants its holder ``editor`` (editing clients) or ``viewer``
  on its one document, so the server must run with
  ``COWRITE_AUTH_DOCS_CLAIM=1``.  The alternative (the first client creates
  the document and ``share-document``s it to the others) costs a round trip
  per member and orders the connect phase; the claim keeps every client
  independent.  The first join creates the document in the store.
* **Latency is wall clock**: each operation carries ``time.time_ns()`` at
  send (``{"t": ns, "p": padding}``); the receiver subtracts its own
  ``time.time_ns()`` taken when the bytes arrived.  Workers on one machine
  share CLOCK_REALTIME, so rooms may span workers and instances.
* **One client is cheap**: an ``asyncio.Protocol``, no task while connected,
  data frames cut by the shared transport's fast path (websockets' parser for
  anything else), ``remote-edit`` recognised by its prefix and parsed with one
  ``orjson.loads``; every other packet goes through the sans-I/O Socket.IO
  client ``cowrite.protocol.client``, which also builds the outgoing ones.
* **Source addresses**: worker ``w`` connects from ``127.0.0.(2+w)``; its
  clients (at most 16,000, under the 28,232 ephemeral ports of one address)
  never run out of ports, so 100,000 connections need seven workers.  The
  event loop creates each socket (``create_connection`` with ``local_addr``):
  a socket handed to uvloop is closed behind the object's back when the call
  fails, and its number could then be closed twice.

JSON report (``--json``), schema ``cowrite.loadtest/1``
-------------------------------------------------------
``config``        the run's parameters
``connections``   attempted, connected, failed, success_rate (%), errors by reason,
                  connect_time_ms, per_url, connected_at_end
``edits``         sent, skipped, acked, ack_errors, rate, ack_latency_ms (commit + ack)
``delivery``      delivered, expected (acked x (room members - 1)), ratio, rate,
                  latency_ms, caught_up_on_rejoin, malformed
``reconnection``  disconnects, rejoined, failed, retries, drain_notices, drops by reason,
                  time_ms (lost → rejoin ack)
``server``        pids, instances (RSS baseline/connected/end, connections,
                  MB per 1,000), totals, cpu_seconds and cpu_us_per_delivered (edit phase)
``generator``     workers, cpu_seconds, cpu_us_per_delivered, cpu_us_per_message, rss_mb
``adr``           [{metric, target, value, unit, ok}] — ok is null when not measured
``events``, ``timeline_s`` (seconds from the run's start: connected, edit_start,
                  kill, end; and began_unix, that start as Unix time), ``errors``

Every ``*_ms`` summary is ``{count, p50, p95, p99, mean, max}`` in milliseconds.
"""
