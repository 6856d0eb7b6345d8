"""Structured logs: JSON lines when stderr is not a terminal, readable text when it is.

Connection lifecycle events are logged one line each with their reason and
never with the token (``event``, ``sid``, ``user``, ``address``, ``reason``,
... as extra fields).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from typing import Any

import orjson

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={v}"
            for k, v in vars(record).items()
            if k not in _STANDARD and not k.startswith("_")
        )
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line += f" [{extras}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class LoopBatchedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes the lines logged during one event-loop
    iteration with one ``write`` and one ``flush``, at the end of it.

    A join storm logs a line per connect and per disconnect: one write system
    call each with ``StreamHandler``.  Records logged outside a running loop
    (start-up, other threads, shutdown) and records of WARNING and above are
    written at once, with what was waiting before them, so order is kept."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        # The loop whose end-of-iteration flush is scheduled (a loop that
        # closed before running it is simply replaced by the next one).
        self._scheduled: asyncio.AbstractEventLoop | None = None
        self._scheduled_thread = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._pending.append(line)
        if record.levelno < logging.WARNING:
            scheduled = self._scheduled
            if (
                scheduled is not None
                and scheduled.is_running()
                and threading.get_ident() == self._scheduled_thread
            ):
                # The flush at the end of this iteration is already due (and
                # Python 3.11's get_running_loop() is a getpid() system call).
                return
            try:
                loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                if self._scheduled is not loop:
                    self._scheduled = loop
                    self._scheduled_thread = threading.get_ident()
                    loop.call_soon(self._flush_pending)
                return
        self._write_pending()

    def _flush_pending(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._scheduled = None
            self._write_pending()

    def _write_pending(self) -> None:
        if not self._pending:
            return
        text, self._pending = "".join(self._pending), []
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:  # a closed or broken stderr must not stop the server
            pass

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()
            super().flush()


def configure(level: str = "info", *, json: bool | None = None) -> None:
    """Log to stderr; ``json=None`` picks JSON unless stderr is a terminal."""
    use_json = not sys.stderr.isatty() if json is None else json
    # Fields no formatter here prints: skip collecting them for every record
    # (the logging HOWTO's "Optimization" knobs).  The caller's file and line
    # cost a stack walk per record, the process id a system call.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = LoopBatchedHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
