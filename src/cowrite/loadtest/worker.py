"""A load-generator worker process: one uvloop event loop, up to 16,000 clients.

The coordinator (``cowrite.loadtest.runner``) talks to it over a
``multiprocessing`` pipe, with tuples ``(kind, payload)``:

worker → coordinator
    ``("progress", stats)`` every 0.5 s; ``("connected", stats)`` once every
    client has tried to connect; ``("result", result)`` after the edit phase
    and the drain; ``("error", text)`` if it cannot go on.
coordinator → worker
    ``("start", wall_time, duration)``: edit from that ``time.time()`` on, for
    ``duration`` seconds; ``("close",)``: disconnect and exit; ``("stop",)``:
    abort (Ctrl-C, a failure elsewhere).

Every wait is bounded: the connect phase by ``connect_timeout`` per client,
the wait for commands by a deadline, the edit loop by its end time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import resource
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from cowrite import runtime
from cowrite.auth import AuthSettings, mint_token
from cowrite.loadtest.client import Client, ConnectFailed, Context
from cowrite.loadtest.plan import WorkerPlan

log = logging.getLogger("cowrite.loadtest")

PROGRESS_INTERVAL = 0.5
TICK = 0.01  # edit scheduler resolution, seconds
COMMAND_WAIT = 3600.0  # longest wait for the coordinator's next command


def worker_main(wplan: WorkerPlan, pipe: Connection) -> None:
    """Process entry point (importable, for the ``spawn`` start method)."""
    _raise_open_files(wplan.stop - wplan.start + 512)
    try:
        runtime.run(Worker(wplan, pipe).main(), use_uvloop=True)
    except Exception:
        _send(pipe, ("error", traceback.format_exc()))
    finally:
        pipe.close()


def _raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _send(pipe: Connection, message: tuple[Any, ...]) -> None:
    # The coordinator may be gone; the worker then stops at its next command wait.
    with contextlib.suppress(OSError, ValueError):
        pipe.send(message)


def rss_bytes(pid: int | str = "self") -> int | None:
    """VmRSS of a process from /proc (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


class Worker:
    def __init__(self, wplan: WorkerPlan, pipe: Connection) -> None:
        self.wplan = wplan
        self.pipe = pipe
        self.ctx = Context(wplan.plan, wplan.source)
        self.clients: list[Client] = []
        self.inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self.stop_flag = False
        self.cpu_start = 0.0
        self.time_start = 0.0
        self.cpu_measured = 0.0
        self.window = 0.0

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.pipe.fileno(), self._on_pipe)
        progress = loop.create_task(self._progress())
        try:
            mint_started = time.process_time()
            self.clients = self._make_clients()
            mint_cpu = time.process_time() - mint_started
            # Start-up objects (tokens, clients) leave the collector's sight, as
            # the server does (cowrite.runtime.tune_gc).
            runtime.tune_gc()
            await self._connect_all()
            self.ctx.reconnect = True
            _send(self.pipe, ("connected", self.ctx.stats.snapshot()))
            command = await self._command()
            if command[0] == "start":
                await self._edit(float(command[1]), float(command[2]))
                await self._drain()
                self.ctx.counting = False
                _send(self.pipe, ("result", self._result(mint_cpu)))
                command = await self._command()
        finally:
            progress.cancel()
            self.ctx.stopping = True
            for client in self.clients:
                if client.conn is not None:
                    client.conn.close()
            for task in list(self.ctx.tasks):
                task.cancel()
            await asyncio.sleep(0.2)  # let the close frames go out
            loop.remove_reader(self.pipe.fileno())

    # -- set-up --------------------------------------------------------------

    def _make_clients(self) -> list[Client]:
        wplan = self.wplan
        plan = wplan.plan
        auth = None
        if plan.secret is not None:
            auth = AuthSettings(secret=plan.secret, audience=plan.audience, issuer=plan.issuer)
        clients = []
        for i in range(wplan.start, wplan.stop):
            doc_id = plan.doc_id(i)
            editor = plan.is_editor(i)
            if auth is not None:
                token = mint_token(
                    auth,
                    user_id=plan.user_id(i),
                    ttl=plan.token_ttl,
                    docs={doc_id: "editor" if editor else "viewer"},
                )
            else:
                token = wplan.tokens[i - wplan.start]
            clients.append(
                Client(
                    self.ctx,
                    i,
                    token,
                    doc_id=doc_id,
                    editor=editor,
                    members=plan.room_members(i),
                )
            )
        return clients

    # -- coordinator ---------------------------------------------------------

    def _on_pipe(self) -> None:
        try:
            while self.pipe.poll():
                message = self.pipe.recv()
                if message[0] == "stop":
                    self.stop_flag = True
                self.inbox.put_nowait(message)
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(self.pipe.fileno())
            self.stop_flag = True
            self.inbox.put_nowait(("stop",))

    async def _command(self) -> tuple[Any, ...]:
        try:
            return await asyncio.wait_for(self.inbox.get(), COMMAND_WAIT)
        except TimeoutError:
            return ("stop",)

    async def _progress(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL)
            _send(self.pipe, ("progress", self.ctx.stats.snapshot()))

    # -- phases --------------------------------------------------------------

    async def _connect_all(self) -> None:
        """Every client tries once, at the worker's share of --connect-rate."""
        loop = asyncio.get_running_loop()
        plan = self.wplan.plan
        interval = 1.0 / self.wplan.connect_rate
        gate = asyncio.Semaphore(plan.connect_concurrency)
        tasks: set[asyncio.Task[None]] = set()
        started = loop.time()
        for k, client in enumerate(self.clients):
            if self.stop_flag:
                break
            delay = started + k * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await gate.acquire()
            task = loop.create_task(self._first_connect(client, gate))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=plan.connect_timeout + 5)

    async def _first_connect(self, client: Client, gate: asyncio.Semaphore) -> None:
        stats = self.ctx.stats
        stats.attempted += 1
        plan = self.wplan.plan
        began = time.monotonic()
        try:
            await client.open(plan.url_index(client.index), plan.connect_timeout)
        except ConnectFailed as exc:
            stats.connect_failed += 1
            stats.errors[exc.reason] += 1
        else:
            stats.connect_time.record(int((time.monotonic() - began) * 1e6))
        finally:
            gate.release()

    async def _edit(self, start_wall: float, duration: float) -> None:
        """Send ``rate`` edits per second round-robin over this worker's editors."""
        loop = asyncio.get_running_loop()
        ctx = self.ctx
        stats = ctx.stats
        rate = self.wplan.rate
        editors = [c for c in self.clients if c.editor]
        start = loop.time() + (start_wall - time.time())
        if start > loop.time():
            await asyncio.sleep(start - loop.time())
        ctx.counting = True
        self.cpu_start = time.process_time()
        self.time_start = loop.time()
        end = start + duration
        burst = max(1, int(rate * 0.1))  # never more than 100 ms worth at once
        scheduled = 0
        turn = 0
        while loop.time() < end and not self.stop_flag:
            due = min(int((loop.time() - start) * rate) - scheduled, burst)
            for _ in range(due):
                scheduled += 1
                sent = False
                for _ in range(len(editors)):  # the next editor able to send
                    client = editors[turn % len(editors)]
                    turn += 1
                    if client.send_edit():
                        sent = True
                        break
                if not sent:
                    stats.skipped += 1
            await asyncio.sleep(TICK)

    async def _drain(self) -> None:
        """Wait for deliveries in flight, and for reconnections under way (bounded)."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.wplan.plan.drain)
        deadline = loop.time() + self.wplan.plan.reconnect_timeout
        while self.ctx.stats.reconnecting and loop.time() < deadline:
            if self.stop_flag:
                break
            await asyncio.sleep(0.1)
        unfinished = self.ctx.stats.unfinished
        for client in self.clients:
            stage = client.unfinished_stage()
            if stage is not None:
                unfinished[stage] += 1
        self.cpu_measured = time.process_time() - self.cpu_start
        self.window = loop.time() - self.time_start

    def _result(self, mint_cpu: float) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "worker": self.wplan.worker,
            "pid": os.getpid(),
            "source": self.wplan.source,
            "clients": self.wplan.stop - self.wplan.start,
            "stats": self.ctx.stats.snapshot(),
            "cpu_measured": self.cpu_measured,
            "window": self.window,
            "cpu_total": usage.ru_utime + usage.ru_stime,
            "mint_cpu": mint_cpu,
            "rss": rss_bytes(),
            "gc_collections": sum(s["collections"] for s in gc.get_stats()),
        }
