"""The Engine.IO v4 session state machine (sans-I/O).

Theory of operation
-------------------
One ``EngineSession`` is one Engine.IO session, whatever transport carries it.
The I/O adapter feeds it what arrives (a polling GET, a polling POST body, a
WebSocket message, the clock) and reads back what to do: the events for the
application (``events``), the packets to write on the WebSocket
(``take_ws_out``), the body to answer a parked polling GET with (``take_poll_response``).
Time always comes in as the ``now`` argument; nothing here sleeps or reads a clock.

States (``SessionState``), one table ``_TRANSITIONS`` below holds every move::

    OPENING --open()--------------------------> OPEN
    OPEN    --WebSocket probe arrives (sid)-----> UPGRADING
    UPGRADING --"5" upgrade on the probe-------> OPEN        (transport is now websocket)
    UPGRADING --probe socket lost/bad---------> OPEN        (still polling)
    OPEN / UPGRADING --close(graceful)--------> CLOSING     (flush, then CLOSED)
    any but CLOSED --close()/error/timeout----> CLOSED

Heartbeat (v4): the server sends PING every ``ping_interval``; the client must
answer PONG within ``ping_timeout`` or the session closes with "ping timeout".

Deadlines are exact and come from the schedule, not from when a timer happened
to run: the PING is due at ``next_ping`` (``ping_interval`` after the
handshake, or after the last PONG), and its PONG is due ``ping_timeout`` after
``next_ping``, even when the adapter's timer sends the PING late.  Every input
(a polling GET or POST, a WebSocket message) first compares ``now`` with the
earliest deadline (``due``) and catches up if it has passed, so a request that
arrives after the deadline finds the session closed whatever the timer's
resolution; on the hot path that costs one comparison.

The schedule starts from ``now`` truncated to the millisecond, as Node's
timers (libuv) count: a client that sleeps ``pingInterval + pingTimeout`` on
such a clock after the handshake (the official test suites do) may wake up to
1 ms "early" on a finer clock, and must still find the session closed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Final

from cowrite.errors import CloseReason, ProtocolError
from cowrite.protocol.engineio import (
    CLOSE_TEXT,
    NOOP_TEXT,
    PING_TEXT,
    PONG_PROBE_TEXT,
    Handshake,
    Packet,
    PacketType,
    decode_payload,
    decode_text,
    encode_payload,
)
from cowrite.records import record

#: Float sums of deadlines carry rounding error (``t + 0.3 + 0.2`` may exceed
#: ``t + 0.5`` by one ulp); a deadline counts as reached this close to it.
#: Clocks tick in nanoseconds (asyncio) or milliseconds (uvloop).
_SLACK: Final = 1e-6


def _whole_ms(t: float) -> float:
    """``t`` (seconds) truncated to the millisecond (``k / 1000 * 1000`` may
    come out just below ``k``: a nanosecond of tolerance)."""
    return math.floor(t * 1000 + 1e-6) / 1000


class SessionState(Enum):
    OPENING = "opening"
    OPEN = "open"
    UPGRADING = "upgrading"
    CLOSING = "closing"
    CLOSED = "closed"


class Transport(Enum):
    POLLING = "polling"
    WEBSOCKET = "websocket"


_S = SessionState
# (state, input) -> next state.  Inputs not listed for a state are protocol
# misuse by the adapter (a LocalError) or are handled without a state change.
_TRANSITIONS: Final[dict[tuple[SessionState, str], SessionState]] = {
    (_S.OPENING, "open"): _S.OPEN,
    (_S.OPEN, "probe"): _S.UPGRADING,
    (_S.UPGRADING, "upgrade"): _S.OPEN,
    (_S.UPGRADING, "probe_lost"): _S.OPEN,
    (_S.OPEN, "close_graceful"): _S.CLOSING,
    (_S.UPGRADING, "close_graceful"): _S.CLOSING,
    (_S.OPENING, "close"): _S.CLOSED,
    (_S.OPEN, "close"): _S.CLOSED,
    (_S.UPGRADING, "close"): _S.CLOSED,
    (_S.CLOSING, "close"): _S.CLOSED,
}


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """The Engine.IO settings a session needs (seconds and bytes)."""

    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    max_payload: int = 1_000_000
    upgrades: tuple[str, ...] = ("websocket",)
    # Packets per polling response: python-engineio's client refuses payloads
    # of more than 16 packets; the rest goes with the next GET.
    max_poll_packets: int = 16


# Events for the application -------------------------------------------------


@record
class MessageReceived:
    data: str | bytes


@dataclass(frozen=True, slots=True)
class Upgraded:
    """The session moved from polling to the WebSocket."""


@dataclass(frozen=True, slots=True)
class SessionClosed:
    reason: CloseReason


Event = MessageReceived | Upgraded | SessionClosed


@dataclass(frozen=True, slots=True)
class HttpReply:
    """What to answer an HTTP request with (``body`` is ``None`` for "park it")."""

    status: int
    body: bytes | None


PARK: Final = HttpReply(200, None)
OK_REPLY: Final = HttpReply(200, b"ok")


class EngineSession:
    """One Engine.IO session.  See the module docstring for the state machine."""

    __slots__ = (
        "_closing_deadline",
        "_final_poll",
        "_pong_deadline",
        "close_reason",
        "config",
        "due",
        "events",
        "next_ping",
        "outbox",
        "poll_parked",
        "sid",
        "state",
        "transport",
        "ws_out",
    )

    def __init__(self, sid: str, transport: Transport, config: EngineConfig) -> None:
        self.sid = sid
        self.transport = transport
        self.config = config
        self.state = SessionState.OPENING
        self.events: list[Event] = []
        # Packets waiting for the polling transport (text packets as str,
        # binary messages as bytes).  While on WebSocket this stays empty and
        # ws_out collects what to write instead.
        self.outbox: list[str | bytes] = []
        self.ws_out: list[str | bytes] = []
        self.poll_parked = False
        self.next_ping = 0.0
        # The earliest deadline (``next_deadline()``) minus _SLACK: an input at
        # ``now >= due`` first runs ``on_timer(now)``.
        self.due = float("inf")
        self._pong_deadline: float | None = None
        self._closing_deadline: float | None = None
        self._final_poll: bytes | None = None
        self.close_reason: CloseReason | None = None

    # -- state machine -------------------------------------------------------

    def _move(self, action: str) -> None:
        self.state = _TRANSITIONS[(self.state, action)]

    @property
    def closed(self) -> bool:
        return self.state is SessionState.CLOSED

    def open(self, now: float) -> str:
        """Start the session; returns the OPEN packet (handshake) to send first."""
        self._move("open")
        self.next_ping = _whole_ms(now) + self.config.ping_interval
        self._reschedule()
        config = self.config
        return Handshake(
            self.sid,
            config.ping_interval,
            config.ping_timeout,
            config.max_payload,
            config.upgrades if self.transport is Transport.POLLING else (),
        ).encode()

    def next_deadline(self) -> float:
        """When ``on_timer`` must next be called."""
        if self._closing_deadline is not None:
            return self._closing_deadline
        if self._pong_deadline is not None:
            return self._pong_deadline
        return self.next_ping

    def _reschedule(self) -> None:
        self.due = self.next_deadline() - _SLACK

    def on_timer(self, now: float) -> None:
        """Drive the heartbeat and the deadlines.

        A late call catches up with the schedule: the PING that was due is sent,
        its PONG deadline still counts from when the PING was due, and when that
        has passed as well the session closes now.
        """
        for _ in range(2):  # at most: send the overdue PING, then time out
            if self.state is SessionState.CLOSED or now < self.due:
                return
            if self._closing_deadline is not None:
                self.close(self.close_reason or CloseReason.FORCED_CLOSE)
                return
            if self._pong_deadline is not None:
                self.close(CloseReason.PING_TIMEOUT)
                return
            # A PING that reaches the client now (WebSocket, or a parked GET)
            # gives it ping_timeout from now, as Node does: a late timer must
            # not shorten the client's time.  One that waits in the outbox for
            # a GET counts from when it was due (the client was not polling).
            sent_now = self.transport is Transport.WEBSOCKET or self.poll_parked
            start = max(now, self.next_ping) if sent_now else self.next_ping
            self._pong_deadline = start + self.config.ping_timeout
            self._reschedule()
            self.send_packet(PING_TEXT)

    # -- outgoing ------------------------------------------------------------

    def send_packet(self, packet: str | bytes) -> None:
        """Queue one encoded packet (``"4..."`` text, or raw bytes of a binary message)."""
        if self.state is SessionState.CLOSED or self.state is SessionState.CLOSING:
            return
        if self.transport is Transport.WEBSOCKET:
            self.ws_out.append(packet)
        else:
            self.outbox.append(packet)

    def take_ws_out(self) -> list[str | bytes]:
        out = self.ws_out
        if out:
            self.ws_out = []
        return out

    def take_poll_response(self) -> bytes | None:
        """The body for the parked GET if it should be answered now, else ``None``."""
        if not self.poll_parked:
            return None
        if self._final_poll is not None:
            self.poll_parked = False
            body = self._final_poll
            self._final_poll = None
            return body
        if self.outbox:
            self.poll_parked = False
            return self._drain_outbox()
        return None

    def _drain_outbox(self) -> bytes:
        """Encode up to ``max_poll_packets`` queued packets for one polling response."""
        limit = self.config.max_poll_packets
        if len(self.outbox) <= limit:
            body = encode_payload(self.outbox)
            self.outbox = []
        else:
            body = encode_payload(self.outbox[:limit])
            del self.outbox[:limit]
        if self.state is SessionState.CLOSING and not self.outbox:
            self.close(self.close_reason or CloseReason.FORCED_CLOSE)
        return body

    # -- polling input -------------------------------------------------------

    def poll(self, now: float) -> HttpReply:
        """A polling GET arrived.  ``PARK`` means hold it open and call
        ``take_poll_response`` after every later input."""
        if self.transport is Transport.WEBSOCKET:
            # Upgraded: polling requests for this sid are refused, the session lives on.
            return HttpReply(400, b"session upgraded to websocket")
        if now >= self.due:
            self.on_timer(now)
        if self.state is SessionState.CLOSED:
            return HttpReply(400, b"session closed")
        if self.poll_parked:
            # Two concurrent GETs: the protocol says close the session; the
            # parked one gets a CLOSE packet (engine.io-protocol v4 test suite).
            self._final_poll = CLOSE_TEXT.encode()
            self._close(CloseReason.TRANSPORT_ERROR)
            return HttpReply(400, b"duplicate poll")
        if self.state is SessionState.UPGRADING:
            # The client is pausing polling for an upgrade: end this poll at once.
            self.outbox.append(NOOP_TEXT)
        if self.outbox:
            return HttpReply(200, self._drain_outbox())
        self.poll_parked = True
        return PARK

    def poll_aborted(self) -> None:
        """The connection carrying the parked GET went away."""
        if self.poll_parked and self.state is not SessionState.CLOSED:
            self.poll_parked = False
            self.close(CloseReason.TRANSPORT_CLOSE)

    def post(self, body: bytes, now: float) -> HttpReply:
        """A polling POST with ``body`` arrived."""
        if self.transport is Transport.WEBSOCKET:
            return HttpReply(400, b"session upgraded to websocket")
        if now >= self.due:
            self.on_timer(now)
        if self.state is SessionState.CLOSED:
            return HttpReply(400, b"session closed")
        if len(body) > self.config.max_payload:
            self.close(CloseReason.PAYLOAD_TOO_LARGE)
            return HttpReply(413, b"payload too large")
        try:
            packets = decode_payload(body)
            for packet in packets:
                self._receive(packet, now)
        except ProtocolError as exc:
            self.close(exc.close_reason or CloseReason.PARSE_ERROR)
            return HttpReply(400, exc.message.encode())
        return OK_REPLY

    # -- WebSocket input -----------------------------------------------------

    def receive_ws(self, data: str | bytes, now: float) -> str | bytes | None:
        """A WebSocket message arrived on the session's (upgraded or direct) socket.

        Returns the data of a MESSAGE packet directly (the hot path allocates no
        event); every other effect is queued in ``events`` / ``ws_out``.
        """
        if now >= self.due:
            self.on_timer(now)
        if self.state is SessionState.CLOSED:
            return None
        if isinstance(data, bytes):
            return data
        if data[:1] == "4":
            return data[1:]
        try:
            self._receive(decode_text(data), now)
        except ProtocolError as exc:
            self.close(exc.close_reason or CloseReason.PARSE_ERROR)
        return None

    def begin_upgrade(self) -> bool:
        """A WebSocket arrived carrying this sid.  ``False``: refuse it."""
        if (
            self.transport is not Transport.POLLING
            or self.state is not SessionState.OPEN
            or "websocket" not in self.config.upgrades
        ):
            return False
        self._move("probe")
        return True

    def receive_probe(self, data: str | bytes, now: float) -> str | None:
        """A message on the probing WebSocket (before the upgrade completes).

        Returns text to send back on the probe socket, or ``None``.  Raises
        ``ProtocolError`` when the probe must be dropped (the session survives
        on polling).
        """
        if self.state is not SessionState.UPGRADING:
            raise ProtocolError("no upgrade in progress", close_reason=None)
        if data == "2probe":
            # Make the client's pending poll return so it can pause polling.
            if self.poll_parked:
                self.outbox.append(NOOP_TEXT)
            return PONG_PROBE_TEXT
        if data == "5":
            self._move("upgrade")
            self.transport = Transport.WEBSOCKET
            if self.poll_parked:
                self._final_poll = (
                    encode_payload([*self.outbox, NOOP_TEXT]) if self.outbox else NOOP_TEXT.encode()
                )
                self.outbox = []
            # Everything still buffered for polling goes out on the WebSocket.
            self.ws_out.extend(self.outbox)
            self.outbox = []
            self.events.append(Upgraded())
            return None
        self._move("probe_lost")
        raise ProtocolError("unexpected packet during upgrade", close_reason=None)

    def probe_lost(self) -> None:
        """The probing WebSocket closed before the upgrade completed."""
        if self.state is SessionState.UPGRADING:
            self._move("probe_lost")

    # -- shared input --------------------------------------------------------

    def _receive(self, packet: Packet, now: float) -> None:
        ptype = packet.type
        if ptype is PacketType.MESSAGE:
            self.events.append(MessageReceived(packet.data))
        elif ptype is PacketType.PONG:
            if self._pong_deadline is not None:
                self._pong_deadline = None
                self.next_ping = _whole_ms(now) + self.config.ping_interval
                self._reschedule()
        elif ptype is PacketType.CLOSE:
            if self.poll_parked:
                self._final_poll = NOOP_TEXT.encode()
            self._close(CloseReason.CLIENT_CLOSE)
        elif ptype is PacketType.PING:
            # v4 clients do not ping; answering keeps older tooling working.
            self.send_packet("3" + (packet.data if isinstance(packet.data, str) else ""))
        elif ptype is PacketType.NOOP:
            pass
        else:  # OPEN or UPGRADE from a client, outside a probe
            raise ProtocolError(f"unexpected {ptype.name} packet from client")

    # -- closing -------------------------------------------------------------

    def close(self, reason: CloseReason, *, graceful: bool = False, now: float = 0.0) -> None:
        """Close the session.  ``graceful``: first deliver what is queued (polling
        gets a CLOSE packet after it), for at most ``ping_timeout`` seconds."""
        if self.state is SessionState.CLOSED:
            return
        if (
            graceful
            and self.state is not SessionState.CLOSING
            and self.transport is Transport.POLLING
        ):
            if self.state is SessionState.OPENING:
                self._close(reason)
                return
            self._move("close_graceful")
            self.close_reason = reason
            self.outbox.append(CLOSE_TEXT)
            self._closing_deadline = now + self.config.ping_timeout
            self._reschedule()
            return
        if self.poll_parked and self._final_poll is None:
            self._final_poll = (
                encode_payload([*self.outbox, CLOSE_TEXT]) if self.outbox else CLOSE_TEXT.encode()
            )
            self.outbox = []
        self._close(reason)

    def _close(self, reason: CloseReason) -> None:
        if self.state is SessionState.CLOSED:
            return
        self._move("close")
        self.close_reason = reason
        self.events.append(SessionClosed(reason))
