"""Background tasks of the collaboration service.

Invariant: a background task's failure is logged (never lost silently with
the task); the caller does not wait for it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

# The collaboration service's logger: its name is in every line it logs.
log = logging.getLogger("cowrite.collab")


def log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task failed", exc_info=task.exception())
