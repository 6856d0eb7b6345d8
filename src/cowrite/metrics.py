"""Prometheus metrics (``/metrics``), names under ``cowrite_``.

Hot-path counts (operations received and delivered, broker traffic) are plain
integers on the objects that do the work; a custom collector reads them at
scrape time, so a message costs no metric call.  Latencies are histograms
observed once per operation or batch, never per recipient; those on the edit
path (``LocalHistogram``) are a list increment, exported at scrape time too
(prometheus-client's ``Histogram.observe`` takes a lock and costs a few µs).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from cowrite.protocol.session import Transport

if TYPE_CHECKING:
    from cowrite.core.service import CollabService
    from cowrite.server.socketio import SocketServer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class LocalHistogram(Collector):
    """A histogram for the hot path: ``observe`` is a bisect and two additions
    (one event-loop thread, so no lock); the collector exports it in
    Prometheus' cumulative form at scrape time."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def collect(self) -> Iterator[HistogramMetricFamily]:
        running = 0
        buckets: list[tuple[str, float]] = []
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=buckets, sum_value=self.sum
        )


class Metrics:
    """All of one application's metrics, in their own registry."""

    def __init__(self, server: SocketServer, service: CollabService) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        # Observed once per connection, on the event loop: the lock-free kind
        # too (prometheus_client's takes two locks per observation).
        self.handshake = LocalHistogram(
            "cowrite_handshake_duration_seconds",
            "From opening the Engine.IO session to the Socket.IO CONNECT reply.",
            _LATENCY_BUCKETS,
        )
        self.commit_latency = LocalHistogram(
            "cowrite_commit_latency_seconds",
            "Time of one store transaction (a group commit).",
            _LATENCY_BUCKETS,
        )
        self.commit_batch = LocalHistogram(
            "cowrite_commit_batch_size",
            "Operations per store transaction.",
            (1, 2, 5, 10, 20, 50, 100, 200, 500),
        )
        self.delivery = LocalHistogram(
            "cowrite_delivery_latency_seconds",
            "From receiving an operation to queueing it for its last local recipient "
            "(includes the durable commit).",
            _LATENCY_BUCKETS,
        )
        for local in (self.handshake, self.commit_latency, self.commit_batch, self.delivery):
            self.registry.register(local)
        self.disconnects: Tally[str] = Tally()
        self.connect_errors = 0
        self.registry.register(_StateCollector(self, server, service))
        service.committer.observe = self._observe_commit
        service.observe_delivery = self.delivery.observe
        server.observe_handshake = self.handshake.observe

    def _observe_commit(self, size: int, seconds: float) -> None:
        self.commit_batch.observe(size)
        self.commit_latency.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, metrics: Metrics, server: SocketServer, service: CollabService) -> None:
        self.metrics = metrics
        self.server = server
        self.service = service

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        engine = self.server.engine
        svc = self.service
        by_transport: Tally[str] = Tally()
        for handle in list(engine.sessions.values()):
            by_transport[handle.session.transport.value] += 1
        g = GaugeMetricFamily(
            "cowrite_connections", "Open Engine.IO sessions.", labels=["transport"]
        )
        for transport in Transport:
            g.add_metric([transport.value], by_transport.get(transport.value, 0))
        yield g

        c = CounterMetricFamily(
            "cowrite_connects", "Connection attempts by result.", labels=["result"]
        )
        c.add_metric(["ok"], svc.connects_ok)
        c.add_metric(["auth_failed"], sum(svc.auth_failures.values()))
        c.add_metric(["access_denied"], svc.access_denied)
        c.add_metric(["limited"], sum(engine.admission.refused.values()))
        c.add_metric(["error"], self.metrics.connect_errors)
        yield c

        a = CounterMetricFamily("cowrite_auth_failures", "Refused tokens by code.", labels=["code"])
        for code, n in sorted(svc.auth_failures.items()):
            a.add_metric([code], n)
        yield a

        d = CounterMetricFamily("cowrite_disconnects", "Disconnects by reason.", labels=["reason"])
        for reason, n in sorted(self.metrics.disconnects.items()):
            d.add_metric([reason], n)
        yield d

        yield _counter(
            "cowrite_operations_received", "Edit operations accepted for commit.", svc.ops_received
        )
        yield _counter(
            "cowrite_operations_delivered",
            "remote-edit events queued to recipients.",
            svc.ops_delivered,
        )
        yield _counter(
            "cowrite_operations_replayed",
            "Operations sent in join/sync catch-up pages.",
            svc.ops_replayed,
        )
        r = CounterMetricFamily(
            "cowrite_recoveries", "Joins with since > 0, by outcome.", labels=["outcome"]
        )
        for outcome, n in sorted(svc.recoveries.items()):
            r.add_metric([outcome], n)
        yield r
        yield _counter(
            "cowrite_sessions_resumed",
            "Sockets resumed by connection-state recovery.",
            svc.resumed,
        )
        rf = CounterMetricFamily(
            "cowrite_resumes_refused",
            "Resume attempts that became new sockets, by reason.",
            labels=["reason"],
        )
        for reason, n in sorted(svc.resume_failed.items()):
            rf.add_metric([reason], n)
        yield rf
        yield _counter(
            "cowrite_operations_resumed",
            "Missed operations sent to resumed sockets.",
            svc.ops_resumed,
        )
        yield _counter(
            "cowrite_commits", "Store transactions (group commits).", svc.committer.batches
        )
        yield _counter(
            "cowrite_broker_published", "Messages handed to the broker.", svc.broker_published
        )
        yield _counter(
            "cowrite_broker_publish_failures",
            "Messages the broker could not take.",
            svc.publish_failures,
        )
        yield _counter(
            "cowrite_broker_received",
            "Messages received from other instances.",
            svc.broker_received,
        )
        yield _counter(
            "cowrite_broker_outages", "Times the broker subscriber was lost.", svc.broker.outages
        )
        yield _counter(
            "cowrite_gaps_filled",
            "Reads of the log to fill a gap in broker delivery.",
            svc.gaps_filled,
        )
        yield _counter("cowrite_snapshots_stored", "Snapshots stored.", svc.snapshots_stored)
        yield _counter(
            "cowrite_snapshots_sent",
            "Snapshots sent in join/sync acks (resync included).",
            svc.snapshots_sent,
        )
        yield _counter(
            "cowrite_snapshot_resyncs",
            "Clients whose since was older than the kept log, answered with a snapshot.",
            svc.snapshot_resyncs,
        )
        yield _counter(
            "cowrite_slow_consumer_disconnects",
            "Connections dropped because they did not read fast enough.",
            self.metrics.disconnects.get("slow consumer", 0),
        )
        rl = CounterMetricFamily(
            "cowrite_rate_limited", "Refusals by a rate limit.", labels=["kind"]
        )
        rl.add_metric(["message"], svc.rate_limited)
        for reason, n in sorted(engine.admission.refused.items()):
            rl.add_metric([reason], n)
        yield rl
        yield _counter(
            "cowrite_flood_disconnects", "Clients disconnected for flooding.", svc.flood_disconnects
        )
        yield _gauge("cowrite_documents_open", "Documents with local members.", svc.document_count)
        yield _gauge("cowrite_rooms", "Socket.IO rooms.", self.server.room_count())
        yield _gauge(
            "cowrite_handshakes_in_progress",
            "Sessions not yet connected to a namespace.",
            engine.admission.handshaking,
        )
        yield _gauge(
            "cowrite_broker_available",
            "1 when the broker subscriber is connected.",
            int(svc.broker.available),
        )


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)
