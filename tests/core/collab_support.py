"""Shared by the core tests: a recording ClientGateway and the test secret."""

from __future__ import annotations

from typing import Any

SECRET = "test-secret-" + "x" * 32


class Prepared:
    def __init__(self, event: str, args: tuple[Any, ...]) -> None:
        self.event = event
        self.args = args


class RecordingGateway:
    """Implements ClientGateway: remembers what each socket was sent."""

    def __init__(self) -> None:
        self.sent: dict[str, list[tuple[str, tuple[Any, ...]]]] = {}

    def prepare(self, event: str, *args: Any) -> object:
        return Prepared(event, args)

    def send_prepared(self, sid: str, prepared: object) -> None:
        assert isinstance(prepared, Prepared)
        self.sent.setdefault(sid, []).append((prepared.event, prepared.args))

    def send(self, sid: str, event: str, *args: Any) -> None:
        self.sent.setdefault(sid, []).append((event, args))

    def disconnect(self, sid: str) -> None:
        self.sent.setdefault(sid, []).append(("__disconnect__", ()))

    def events(self, sid: str, name: str) -> list[Any]:
        return [args[0] for event, args in self.sent.get(sid, []) if event == name]


class CountsPageReads:
    """Mixed into a real store (``class S(CountsPageReads, SqliteStore)``):
    records the pages of each ``read_pages`` call."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.page_reads: list[list[Any]] = []

    async def read_pages(self, pages: Any) -> Any:
        self.page_reads.append(list(pages))
        return await super().read_pages(pages)  # type: ignore[misc]
