"""Admission control and token buckets, with a fake clock."""

from __future__ import annotations

from cowrite.core.ratelimit import TokenBucket
from cowrite.server.limits import Admission, default_max_connections


def test_token_bucket() -> None:
    b = TokenBucket(rate=2.0, burst=2, now=0.0)
    assert b.take(0.0) == 0.0
    assert b.take(0.0) == 0.0
    assert b.take(0.0) == 0.5
    assert b.take(0.5) == 0.0
    assert not b.full(0.5)
    assert b.full(10.0)


def test_admission_limits() -> None:
    a = Admission(
        max_connections=3, max_handshakes=2, per_ip_connections=1, per_ip_rate=10, per_ip_burst=10
    )
    assert a.admit("1.1.1.1", 0.0) is None
    a.opened("1.1.1.1")
    refusal = a.admit("1.1.1.1", 0.0)
    assert refusal is not None and refusal.status == 429
    assert a.admit("2.2.2.2", 0.0) is None
    a.opened("2.2.2.2")
    handshakes = a.admit("3.3.3.3", 0.0)
    assert handshakes is not None and handshakes.status == 503
    a.connected()
    a.connected()
    assert a.admit(None, 0.0) is None
    a.opened(None)
    cap = a.admit(None, 0.0)
    assert cap is not None and cap.status == 503 and cap.retry_after > 0
    a.closed("1.1.1.1", handshaking=False)
    assert a.admit("1.1.1.1", 0.0) is None
    assert a.refused


def test_admission_rate() -> None:
    a = Admission(
        max_connections=0, max_handshakes=0, per_ip_connections=0, per_ip_rate=1, per_ip_burst=2
    )
    assert a.admit("ip", 0.0) is None
    assert a.admit("ip", 0.0) is None
    slow = a.admit("ip", 0.0)
    assert slow is not None and slow.status == 429 and 0 < slow.retry_after <= 1
    a.sweep(100.0)
    assert a.tracked_addresses() == 0


def test_default_cap_leaves_headroom() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert default_max_connections() < soft
