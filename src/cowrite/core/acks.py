"""Acknowledgements: what every client event's handler answers.

``{"ok": True, ...}`` or ``{"ok": False, "error": {"code": ..., "message":
...}}``; the codes are part of the API (docs/DESIGN.md), a refusal may add
fields to ``error`` (``retryAfter``, ``latest``).
"""

from __future__ import annotations

from typing import Any

Ack = dict[str, Any]


def error(code: str, message: str) -> Ack:
    return {"ok": False, "error": {"code": code, "message": message}}
