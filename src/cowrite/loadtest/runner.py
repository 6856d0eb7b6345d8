"""The coordinator: starts the worker processes, steps them through the phases,
samples the servers, optionally kills one mid-run, and collects the results.

Phases: workers mint tokens and connect (``connect``); once every worker has
reported ``connected``, the coordinator samples the servers' memory and
tells every worker to start editing at the same wall-clock instant
(``edit``, ``duration`` seconds, then ``drain`` seconds and any reconnection
still under way); it samples the servers again when every result is in, then
tells the workers to close.  Every wait has a deadline.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from cowrite.loadtest.kill import KillSpec
from cowrite.loadtest.plan import Plan, WorkerPlan, worker_plans
from cowrite.loadtest.report import build_report, merge_snapshots
from cowrite.loadtest.worker import rss_bytes, worker_main

ProgressCallback = Callable[[str, float, dict[str, Any]], None]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
POLL = 0.2


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process from /proc (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK
    except (OSError, ValueError, IndexError):
        return None


def sample(pids: tuple[int, ...]) -> dict[str, Any]:
    return {
        "time": time.time(),
        "rss": [rss_bytes(p) for p in pids],
        "cpu": [cpu_seconds(p) for p in pids],
    }


@dataclass
class _Worker:
    plan: WorkerPlan
    process: Any
    pipe: Connection
    snapshot: dict[str, Any] | None = None
    connected: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    dead: bool = False


@dataclass
class Run:
    plan: Plan
    tokens: tuple[str, ...] = ()
    server_pids: tuple[int, ...] = ()
    kill: KillSpec | None = None
    on_progress: ProgressCallback | None = None
    errors: list[str] = field(default_factory=list)
    events: dict[str, float] = field(default_factory=dict)
    _workers: list[_Worker] = field(default_factory=list)
    _killed: bool = False
    _samples: dict[str, dict[str, Any]] = field(default_factory=dict)

    def execute(self) -> dict[str, Any]:
        plan = self.plan
        began = self.events["began_unix"] = time.time()
        samples: dict[str, dict[str, Any]] = {"baseline": sample(self.server_pids)}
        context = multiprocessing.get_context("spawn")
        try:
            for wplan in worker_plans(plan, self.tokens):
                parent, child = context.Pipe()
                process = context.Process(
                    target=worker_main,
                    args=(wplan, child),
                    name=f"cowrite-loadtest-{wplan.worker}",
                    daemon=True,
                )
                process.start()
                child.close()
                self._workers.append(_Worker(wplan, process, parent))
            per_worker = max(w.plan.stop - w.plan.start for w in self._workers)
            connect_deadline = (
                time.monotonic()
                + 60.0
                + per_worker * 0.0002  # minting tokens
                + plan.clients / plan.connect_rate
                + plan.connect_timeout
            )
            self._until(lambda w: w.connected is not None, connect_deadline, "connect", began)
            self.events["connected"] = time.time() - began
            samples["connected"] = sample(self.server_pids)
            # Let the servers finish the work the connect phase queued (joins'
            # presence broadcasts) before measuring, if asked to.
            start = time.time() + 0.5 + plan.settle
            self.events["edit_start"] = start - began
            self._broadcast(("start", start, plan.duration))
            self._samples = samples  # "edit_start" is taken when the edit phase begins
            edit_deadline = (
                time.monotonic()
                + 60.0
                + plan.settle
                + plan.duration
                + plan.drain
                + plan.reconnect_timeout
            )
            self._until(lambda w: w.result is not None, edit_deadline, "edit", start)
            samples["end"] = sample(self.server_pids)
            self.events["end"] = time.time() - began
        except KeyboardInterrupt:
            self.errors.append("interrupted")
            self._broadcast(("stop",))
        finally:
            self._shut_down()
        connected = merge_snapshots([w.connected for w in self._workers if w.connected])
        return build_report(
            plan=plan,
            results=[w.result for w in self._workers if w.result is not None],
            connected=connected,
            samples=samples,
            server_pids=self.server_pids,
            kill=self.kill,
            events=self.events,
            errors=self.errors,
        )

    # -- the wait loop -------------------------------------------------------

    def _until(
        self, done: Callable[[_Worker], bool], deadline: float, phase: str, since: float
    ) -> None:
        last_progress = 0.0
        while True:
            pending = [w for w in self._workers if not w.dead and not done(w)]
            if not pending:
                return
            if time.monotonic() > deadline:
                self.errors.append(f"{phase} phase timed out; {len(pending)} workers late")
                self._broadcast(("stop",))
                return
            # Read every live pipe, not only the pending ones: a worker blocks
            # on a full pipe.
            live = [w for w in self._workers if not w.dead]
            ready = wait([w.pipe for w in live], timeout=POLL)
            for w in live:
                if w.pipe in ready:
                    self._receive(w)
            if phase == "edit":
                if "edit_start" not in self._samples and time.time() >= since:
                    self._samples["edit_start"] = sample(self.server_pids)
                self._maybe_kill(since)
            now = time.monotonic()
            if self.on_progress is not None and now - last_progress >= 0.25:
                last_progress = now
                snaps = [w.snapshot for w in self._workers if w.snapshot is not None]
                self.on_progress(phase, time.time() - since, merge_snapshots(snaps))

    def _receive(self, w: _Worker) -> None:
        try:
            while w.pipe.poll():
                kind, *payload = w.pipe.recv()
                if kind == "progress":
                    w.snapshot = payload[0]
                elif kind == "connected":
                    w.snapshot = w.connected = payload[0]
                elif kind == "result":
                    w.result = payload[0]
                    w.snapshot = w.result["stats"]
                elif kind == "error":
                    self.errors.append(f"worker {w.plan.worker}: {payload[0]}")
        except (EOFError, OSError):
            w.dead = True
            if w.result is None:
                code = w.process.exitcode
                self.errors.append(f"worker {w.plan.worker} exited early (code {code})")

    def _maybe_kill(self, start: float) -> None:
        kill = self.kill
        if kill is None or self._killed or time.time() < start + kill.after:
            return
        self._killed = True
        self.events["kill"] = time.time() - self.events["began_unix"]
        for pid in kill.pids:
            try:
                os.kill(pid, kill.signal)
            except OSError as exc:
                self.errors.append(f"kill {pid}: {exc}")

    def _broadcast(self, message: tuple[Any, ...]) -> None:
        for w in self._workers:
            if not w.dead:
                try:
                    w.pipe.send(message)
                except OSError:
                    w.dead = True

    def _shut_down(self) -> None:
        self._broadcast(("close",))
        deadline = time.monotonic() + 30.0
        for w in self._workers:
            w.process.join(max(0.1, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.terminate()
                w.process.join(5.0)
            w.pipe.close()
