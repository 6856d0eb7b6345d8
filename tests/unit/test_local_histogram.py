"""The hot-path histogram exports what prometheus-client's own would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from cowrite.metrics import LocalHistogram


def test_buckets_are_cumulative_and_a_bound_belongs_to_its_bucket() -> None:
    registry = CollectorRegistry()
    hist = LocalHistogram("x_seconds", "doc", (0.01, 0.001))
    registry.register(hist)
    for value in (0.0005, 0.001, 0.005, 1.0):
        hist.observe(value)
    text = generate_latest(registry).decode()
    assert 'x_seconds_bucket{le="0.001"} 2.0' in text
    assert 'x_seconds_bucket{le="0.01"} 3.0' in text
    assert 'x_seconds_bucket{le="+Inf"} 4.0' in text
    assert "x_seconds_count 4.0" in text
    assert "x_seconds_sum 1.0065" in text
