"""Timing policies without a clock: the backoff schedule (seeded RNG) and the edit pacer."""

from __future__ import annotations

import random

import pytest

from cowrite.client import ClientSettings, backoff_delay, reconnect_delay
from cowrite.client.timing import Pacer
from cowrite.errors import ConfigError


def schedule(seed: int, n: int, base: float = 0.25, cap: float = 10.0) -> list[float]:
    rng = random.Random(seed)
    return [backoff_delay(i, base=base, cap=cap, rng=rng) for i in range(n)]


def test_backoff_is_full_jitter_within_an_exponential_bound_and_capped() -> None:
    base, cap = 0.25, 10.0
    for seed in range(200):
        for attempt, delay in enumerate(schedule(seed, 12, base, cap)):
            assert 0.0 <= delay <= min(cap, base * 2**attempt)
    # The first retry comes within ``base``: a single drop reconnects well under 2 s.
    firsts = [schedule(seed, 1)[0] for seed in range(500)]
    assert max(firsts) <= base
    # Full jitter: spread over the whole interval, not clustered at its top.
    assert min(firsts) < base * 0.1 and max(firsts) > base * 0.9
    # Capped: late attempts never exceed the cap, and are spread over [0, cap].
    late = [schedule(seed, 20)[19] for seed in range(500)]
    assert max(late) <= cap and min(late) < cap * 0.1 and max(late) > cap * 0.9


def test_backoff_is_deterministic_for_a_seed() -> None:
    assert schedule(7, 10) == schedule(7, 10)
    assert schedule(7, 10) != schedule(8, 10)
    # Huge attempt numbers do not overflow.
    assert 0 <= backoff_delay(10_000, base=0.25, cap=10.0, rng=random.Random(1)) <= 10.0


def test_drain_delay_is_a_floor_plus_jitter() -> None:
    rng = random.Random(3)
    delays = [reconnect_delay(0, base=0.25, cap=10.0, rng=rng, floor=0.4) for _ in range(200)]
    assert all(0.4 <= d <= 0.65 for d in delays)
    assert len({round(d, 6) for d in delays}) > 150  # jittered, not one value


@pytest.mark.parametrize(
    "kw",
    [
        {"backoff_base": 0},
        {"backoff_base": 1.0, "backoff_cap": 0.5},
        {"connect_timeout": 0},
        {"page_size": 0},
        {"max_in_flight": 0},
        {"path": "socket.io"},
    ],
)
def test_settings_refuse_what_cannot_work(kw: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ClientSettings(**kw)  # type: ignore[arg-type]


def test_default_settings_meet_the_reconnection_target() -> None:
    s = ClientSettings()
    assert s.backoff_base <= 0.5 and s.backoff_cap >= 5.0


def test_pacer_window_then_spacing_after_a_refusal() -> None:
    pacer = Pacer(max_in_flight=2, recover_after=3)
    assert pacer.wait(0.0) == 0
    pacer.sent(0.0)
    pacer.sent(0.0)
    assert pacer.wait(0.0) is None  # window full
    pacer.refused(0.5, now=1.0)  # rate_limited, retryAfter 0.5 s
    pacer.lost()
    assert pacer.wait(1.0) == pytest.approx(0.5)
    assert pacer.wait(1.6) == 0
    pacer.sent(1.6)
    assert pacer.wait(1.6) is None  # one at a time while throttled
    pacer.acked()
    assert pacer.wait(1.6) == pytest.approx(0.5)  # spaced by retryAfter
    for t in (2.1, 2.6):
        pacer.sent(t)
        pacer.acked()
    assert pacer.interval == pytest.approx(0.25)  # halved after 3 accepted edits
