"""The listening socket and its accept loop.

Our own loop rather than ``loop.create_server`` so that running out of file
descriptors is handled the same way on every event loop, and visibly: when
``accept`` fails with EMFILE/ENFILE/ENOBUFS/ENOMEM the listener stops watching
the socket for ``pause`` seconds (pending clients wait in the kernel's backlog
instead of being dropped), counts it, logs it once per pause, and resumes by
itself.  Existing connections are not affected.  (uvloop's own server instead
accepts and immediately closes the connections it cannot keep, uncounted;
asyncio's logs a traceback each time.)
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable

log = logging.getLogger("cowrite.listener")

_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ACCEPTS_PER_WAKEUP = 128  # bounded work per readiness event; the rest next time


class Listener:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        factory: Callable[[], asyncio.Protocol],
        *,
        host: str,
        port: int,
        sock: socket.socket | None = None,
        backlog: int = 4096,
        pause: float = 0.5,
    ) -> None:
        self._loop = loop
        self._factory = factory
        self._pause = pause
        if sock is None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
                sock.listen(backlog)
            except OSError:
                sock.close()
                raise
        sock.setblocking(False)
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.paused_times = 0
        self._watching = False
        self._resume_handle: asyncio.TimerHandle | None = None
        self._pending: set[asyncio.Task[object]] = set()
        self._closed = False

    def start(self) -> None:
        self._watch()

    def _watch(self) -> None:
        if not self._watching and not self._closed:
            self._loop.add_reader(self.sock.fileno(), self._accept)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching:
            self._loop.remove_reader(self.sock.fileno())
            self._watching = False

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRORS:
                    self.paused_times += 1
                    log.warning(
                        "accept failed (%s): pausing accepts for %.1fs",
                        errno.errorcode.get(exc.errno or 0, exc.errno),
                        self._pause,
                        extra={"event": "accept_paused", "count": self.paused_times},
                    )
                    self._unwatch()
                    self._resume_handle = self._loop.call_later(self._pause, self._resume)
                    return
                continue  # ECONNABORTED and the like: that client is gone
            conn.setblocking(False)
            task = self._loop.create_task(self._loop.connect_accepted_socket(self._factory, conn))
            self._pending.add(task)
            task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[object]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("accepted socket failed to start", exc_info=task.exception())

    def _resume(self) -> None:
        self._resume_handle = None
        self._watch()

    def close(self) -> None:
        if self._closed:
            return
        self._unwatch()
        self._closed = True
        if self._resume_handle is not None:
            self._resume_handle.cancel()
        self.sock.close()

    async def wait_closed(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
