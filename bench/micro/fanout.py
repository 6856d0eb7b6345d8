"""Python CPU of one committed operation's fan-out in the sequencer (core/sequencer.py), alone.

``_deliver`` of a ``remote-edit`` to a room of ``--room`` members (one of them
the sender) through a gateway that encodes like ``SocketServer.prepare`` and
sends nowhere: what connection-state recovery adds to the edit path.  Prints
the best of ``--repeat`` runs, in microseconds per operation.

    .venv/bin/python bench/micro/fanout.py                 # recovery off
    .venv/bin/python bench/micro/fanout.py --recovery      # offsets, one document per socket
    .venv/bin/python bench/micro/fanout.py --recovery --docs 2   # sockets in two documents
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from cowrite.auth import Identity
from cowrite.backends.broker_memory import MemoryBroker
from cowrite.backends.presence_memory import MemoryPresence
from cowrite.backends.store import Role
from cowrite.core.members import Conn, Member
from cowrite.core.sequencer import Room
from cowrite.core.service import CollabService
from cowrite.protocol.socketio import encode_event_text


class Gateway:
    """Encodes as the server does (one orjson pass); sending is a list append."""

    def __init__(self) -> None:
        self.sent: list[object] = []

    def prepare(self, event: str, *args: Any) -> object:
        return encode_event_text("/", event, args)

    def send_prepared(self, sid: str, prepared: object) -> None:
        self.sent.append(prepared)

    def send(self, sid: str, event: str, *args: Any) -> None:
        self.sent.append(self.prepare(event, *args))

    def disconnect(self, sid: str) -> None:
        return None


def run(args: argparse.Namespace) -> float:
    gateway = Gateway()
    extra: dict[str, Any] = {}
    if args.recovery:
        from cowrite.backends.recovery_memory import MemoryRecovery

        extra["recovery"] = MemoryRecovery()
    service = CollabService(
        store=None,  # type: ignore[arg-type]  # not reached by _deliver
        presence=MemoryPresence(),
        gateway=gateway,
        verifier=None,  # type: ignore[arg-type]
        broker=MemoryBroker(),
        **extra,
    )
    # Before recovery existed (to compare with an older checkout): encode once.
    sequencer = service._sequencer
    prepare = getattr(sequencer, "_prepare_edit", None) or (
        lambda body: gateway.prepare("remote-edit", body)
    )
    room = Room("doc", asyncio.get_event_loop().create_future())
    for n in range(args.room):
        conn = Conn(f"s{n}", Identity(user_id=f"u{n}", name=f"U{n}", expires_at=2e9))
        for d in range(args.docs):
            member = Member(conn, "doc" if d == 0 else f"other{d}", Role.EDITOR, 0, 0.0)
            member.pending = None
            conn.docs[member.document_id] = member
        room.members[conn.sid] = conn.docs["doc"]
    operation = {"ops": [{"retain": 120}, {"insert": "hello world"}], "v": 1}
    start = time.process_time()
    for seq in range(1, args.n + 1):
        body = {
            "documentId": "doc",
            "seq": seq,
            "userId": "u0",
            "clientOpId": "c",
            "operation": operation,
        }
        sequencer._deliver(room, seq, prepare(body), "s0")
        if len(gateway.sent) > 10_000:
            gateway.sent.clear()
    return (time.process_time() - start) / args.n * 1e6


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--room", type=int, default=5)
    p.add_argument("--docs", type=int, default=1, help="documents each socket is in")
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--recovery", action="store_true")
    args = p.parse_args()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    best = min(run(args) for _ in range(args.repeat))
    mode = f"recovery on, {args.docs} document(s) per socket" if args.recovery else "recovery off"
    print(f"{best:.2f} us CPU per operation to {args.room - 1} recipients ({mode})")


if __name__ == "__main__":
    main()
