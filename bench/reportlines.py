"""Report lines both benchmark scenarios write the same way (run.py's room
broadcast and collab.py's collaboration path)."""

from __future__ import annotations

from typing import Any


def failure_lines(name: str, result: dict[str, Any]) -> list[str]:
    """A server that failed, and clients of the memory test that did not connect."""
    lines: list[str] = []
    err = result.get("error")
    if err:
        lines.append(f"- **{name} failed**: {err}")
    c = (result.get("memory") or {}).get("connect") or {}
    if c.get("failed") or c.get("not_attempted"):
        lines.append(
            f"- {name}: {c.get('failed')} connects failed, {c.get('not_attempted')} not "
            f"attempted: {c.get('errors')}"
        )
    return lines


def closing_lines(doc: dict[str, Any]) -> list[str]:
    """The run's notes and where its JSON is."""
    return [
        *(f"- {note}" for note in doc.get("notes", [])),
        "",
        f"Results JSON: `{doc['results_file']}`",
    ]
