"""The Redis broker: several cowrite instances share messages through Redis pub/sub.

Implements ``cowrite.backends.broker.Broker`` (read its guarantees there) with
redis-py's asyncio client and two connections per instance:

Publisher
    One connection, used by one writer task.  ``publish`` queues the encoded
    frame (at most ``max_pending`` frames; beyond that it returns ``False``) and
    waits for the writer, which sends whatever is queued as one pipeline of
    PUBLISH commands.  One connection and one writer keep the order of the
    ``publish`` calls; the pipeline makes concurrent publishers cheap.  A
    caller that gives up after ``publish_timeout`` gets ``False``, and its frame
    is dropped if it was not sent yet.

Subscriber
    One ``PubSub`` connection read by one reader task, which calls the
    listener.  It is also subscribed to a control channel of its own (it
    stays in subscribe mode with no document, and ``InfoReply`` messages for
    this instance arrive there) and to the channel of every instance,
    ``{channel_prefix}all`` (``publish_instances``).  Every ``heartbeat`` seconds
    without traffic it sends a PING; a connection silent for two heartbeats is
    dead (this catches a lost network, where no RST arrives).  On any failure
    the reader drops the connection, reports the outage, and reconnects with
    capped, jittered exponential backoff (``backoff_min`` doubling to
    ``backoff_max``) on a fresh connection that subscribes every document and
    only then reports ``available``.

Slow subscribers
    Redis disconnects a subscriber whose unread output exceeds its
    ``client-output-buffer-limit pubsub`` (32 MiB hard, 8 MiB for 60 s by
    default).  Here that is an outage like any other: reported, counted,
    recovered from.  Size that limit for the burst an instance must absorb.

``subscribe`` sends SUBSCRIBE followed by a PING carrying a unique token and
waits for that PING's reply: Redis answers commands of one connection in
order, so the reply proves the subscription is in place.

redis-py's own retries are turned off (``retries=0``): failures must reach
this module at once, which decides what to do about them.

Channels are ``{channel_prefix}doc:{quoted document id}`` where the id is
percent-encoded (``urllib.parse.quote`` with no safe characters), so a channel
name is printable, has no spaces or colons of its own, and names one document.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections import deque
from collections.abc import Sequence
from itertools import count
from typing import Any, TypeVar
from urllib.parse import quote

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.maint_notifications import MaintNotificationsConfig

from cowrite.backends.broker import (
    BrokerListener,
    BrokerMessage,
    InfoReply,
    InstanceMessage,
    MalformedMessage,
    OperationMessage,
    PresenceMessage,
    RoleMessage,
    check_origin,
    decode,
    encode,
)
from cowrite.errors import LocalError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: What a broken or unreachable Redis raises through redis-py.
_TRANSPORT_ERRORS = (RedisError, OSError, TimeoutError)


class _Outgoing:
    """One frame waiting for the writer; ``done`` is resolved with the outcome.

    The frames of one ``publish_many`` share one ``done``: a failure resolves it
    (False) at once, success only with the ``last`` frame of the group."""

    __slots__ = ("channel", "done", "frame", "last")

    def __init__(
        self, channel: bytes, frame: bytes, done: asyncio.Future[bool], last: bool = True
    ) -> None:
        self.channel = channel
        self.frame = frame
        self.done = done
        self.last = last


class RedisBroker:
    """Implements ``Broker`` over Redis pub/sub at ``url`` (``redis://host:port/db``).

    ``instance_id`` defaults to a random id; ``channel_prefix`` namespaces the
    channels (give each deployment, or each test, its own).

    Timing: ``publish_timeout`` bounds ``publish`` and ``ping``;
    ``connect_timeout`` bounds each connection attempt; ``heartbeat`` is the
    subscriber's idle PING interval; the reconnect delay grows from
    ``backoff_min`` to ``backoff_max``.  ``max_pending`` bounds the frames
    waiting to be published, and ``max_batch_bytes`` the size of one pipeline.
    """

    def __init__(
        self,
        url: str,
        *,
        instance_id: str | None = None,
        channel_prefix: str = "cowrite:",
        publish_timeout: float = 1.0,
        connect_timeout: float = 1.0,
        heartbeat: float = 5.0,
        backoff_min: float = 0.1,
        backoff_max: float = 2.0,
        max_pending: int = 10_000,
        max_batch_bytes: int = 1 << 20,
    ) -> None:
        self._instance_id = instance_id if instance_id is not None else uuid.uuid4().hex
        self._prefix = channel_prefix
        self._publish_timeout = publish_timeout
        self._connect_timeout = connect_timeout
        self._heartbeat = heartbeat
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max
        self._max_pending = max_pending
        self._max_batch_bytes = max_batch_bytes
        # Without retries a failure surfaces at once; the reader owns recovery.
        options: dict[str, Any] = {
            "socket_connect_timeout": connect_timeout,
            "socket_timeout": publish_timeout,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
            # Not a Redis Enterprise/Cloud feature we use; "auto" costs a failing
            # command per connection on open-source Redis.
            "maint_notifications_config": MaintNotificationsConfig(enabled=False),
        }
        self._pub = Redis.from_url(url, **options)
        self._sub = Redis.from_url(url, **options)
        self._control = self.instance_channel(self._instance_id)
        self._all = f"{channel_prefix}all".encode()

        self._listener: BrokerListener | None = None
        self._started = False
        self._stopped = False
        self._available = False
        self._outages = 0
        # The documents subscribed, by channel; the reader resubscribes them all
        # after a reconnect.
        self._documents: dict[bytes, str] = {}
        self._pubsub: PubSub | None = None
        self._tokens = count(1)
        self._barriers: dict[bytes, asyncio.Future[None]] = {}
        self._subscribing: dict[bytes, asyncio.Future[None]] = {}
        self._first_attempt: asyncio.Future[None] | None = None
        self._reader: asyncio.Task[None] | None = None

        self._outbox: deque[_Outgoing] = deque()
        self._outbox_ready = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    # --- the Broker interface ------------------------------------------------------

    @property
    def instance_id(self) -> str:
        return self._instance_id

    @property
    def available(self) -> bool:
        return self._available

    @property
    def outages(self) -> int:
        return self._outages

    def channel(self, document_id: str) -> bytes:
        """The Redis channel of a document."""
        return f"{self._prefix}doc:{quote(document_id, safe='')}".encode()

    def instance_channel(self, instance_id: str) -> bytes:
        """The Redis channel of one instance (its control channel)."""
        return f"{self._prefix}ctl:{quote(instance_id, safe='')}".encode()

    async def start(self, listener: BrokerListener) -> None:
        """Start the reader and writer; return after the first connection attempt."""
        if self._started:
            raise LocalError("RedisBroker.start() called twice")
        self._started = True
        self._listener = listener
        loop = asyncio.get_running_loop()
        self._first_attempt = loop.create_future()
        self._writer = asyncio.create_task(self._write_loop(), name="cowrite-broker-writer")
        self._reader = asyncio.create_task(self._read_loop(), name="cowrite-broker-reader")
        # So that ``available`` means something when start() returns.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._connect_timeout + self._publish_timeout):
                await asyncio.shield(self._first_attempt)

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._available = False
        for task in (self._reader, self._writer):
            if task is not None:
                task.cancel()
        for task in (self._reader, self._writer):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        while self._outbox:
            _resolve(self._outbox.popleft().done, False)
        await self._pub.aclose()
        await self._sub.aclose()
        # Let the transports closed above run their connection_lost callbacks,
        # so that no ResourceWarning fires when the loop closes.
        await asyncio.sleep(0)

    async def subscribe(self, document_id: str) -> None:
        channel = self.channel(document_id)
        if self._stopped:
            return
        if channel in self._documents:
            # Subscribing twice is once, but the second call must not return
            # before the first subscription is in place either.
            pending = self._subscribing.get(channel)
            if pending is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._publish_timeout):
                        await asyncio.shield(pending)
            return
        self._documents[channel] = document_id
        pubsub = self._pubsub
        if pubsub is None:
            return  # the reader subscribes it when it connects
        done = self._subscribing[channel] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self._publish_timeout):
                await pubsub.subscribe(channel)
                await self._barrier(pubsub)
        except _TRANSPORT_ERRORS as exc:
            # The reader sees the same failure, reconnects and resubscribes.
            logger.debug("subscribe %r did not complete: %r", document_id, exc)
        finally:
            _resolve(done, None)
            if self._subscribing.get(channel) is done:
                del self._subscribing[channel]

    async def unsubscribe(self, document_id: str) -> None:
        channel = self.channel(document_id)
        if self._documents.pop(channel, None) is None:
            return
        pubsub = self._pubsub
        if pubsub is None:
            return
        try:
            async with asyncio.timeout(self._publish_timeout):
                await pubsub.unsubscribe(channel)
        except _TRANSPORT_ERRORS as exc:
            # Harmless: the reader filters out documents not subscribed, and a
            # reconnect subscribes only those that are.
            logger.debug("unsubscribe %r did not complete: %r", document_id, exc)

    async def publish(self, message: BrokerMessage) -> bool:
        check_origin(message, self._instance_id)
        if not self._started or self._stopped or len(self._outbox) >= self._max_pending:
            return False
        frame = encode(message)
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._outbox.append(_Outgoing(self.channel(message.document_id), frame, done))
        self._outbox_ready.set()
        try:
            async with asyncio.timeout(self._publish_timeout):
                # Cancelling ``done`` on timeout tells the writer to skip it.
                return await done
        except TimeoutError:
            return False

    async def publish_many(self, messages: Sequence[BrokerMessage]) -> int:
        if not messages:
            return 0
        for message in messages:
            check_origin(message, self._instance_id)
        if (
            not self._started
            or self._stopped
            or len(self._outbox) + len(messages) > self._max_pending
        ):
            return 0
        frames = [(self.channel(m.document_id), encode(m)) for m in messages]
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        last = len(frames) - 1
        self._outbox.extend(
            _Outgoing(channel, frame, done, i == last) for i, (channel, frame) in enumerate(frames)
        )
        self._outbox_ready.set()
        try:
            async with asyncio.timeout(self._publish_timeout):
                # Cancelling ``done`` on timeout tells the writer to skip the rest.
                return len(messages) if await done else 0
        except TimeoutError:
            return 0

    async def publish_instances(self, message: InstanceMessage) -> int:
        check_origin(message, self._instance_id)
        if not self._started or self._stopped:
            return 0
        frame = encode(message)
        target = message.target if isinstance(message, InfoReply) else None
        channel = self._all if target is None else self.instance_channel(target)
        try:
            # Not through the writer: no order with document messages is
            # promised, and PUBLISH's reply (the receivers) is the result.
            async with asyncio.timeout(self._publish_timeout):
                receivers = int(await self._pub.publish(channel, frame))
        except _TRANSPORT_ERRORS as exc:
            logger.debug("publishing an instance message failed: %r", exc)
            return 0
        if target is None and self._available:
            receivers -= 1  # this instance's own subscriber
        return max(receivers, 0)

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self._publish_timeout):
                return bool(await self._pub.ping())
        except _TRANSPORT_ERRORS:
            return False

    # --- publisher -------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            while self._outbox:
                batch = self._take_batch()
                if batch:
                    sent = await self._send(batch)
                    for item in batch:
                        if item.last or not sent:
                            _resolve(item.done, sent)

    def _take_batch(self) -> list[_Outgoing]:
        batch: list[_Outgoing] = []
        size = 0
        while self._outbox and (not batch or size < self._max_batch_bytes):
            item = self._outbox.popleft()
            if not item.done.done():  # else its caller gave up
                batch.append(item)
                size += len(item.frame)
        return batch

    async def _send(self, batch: list[_Outgoing]) -> bool:
        try:
            async with asyncio.timeout(self._publish_timeout):
                if len(batch) == 1:
                    await self._pub.publish(batch[0].channel, batch[0].frame)
                else:
                    pipe = self._pub.pipeline(transaction=False)
                    for item in batch:
                        pipe.publish(item.channel, item.frame)
                    await pipe.execute()
            return True
        except _TRANSPORT_ERRORS as exc:
            logger.debug("publishing %d message(s) failed: %r", len(batch), exc)
            return False
        except Exception:
            # A bug, not a transport failure: keep the writer alive for the next.
            logger.exception("publishing %d message(s) failed unexpectedly", len(batch))
            return False

    # --- subscriber ------------------------------------------------------------------

    async def _read_loop(self) -> None:
        delay = self._backoff_min
        while True:
            failure: Exception
            try:
                await self._session()
                raise AssertionError("a subscriber session ended without an error")
            except _TRANSPORT_ERRORS as exc:
                failure = exc
            except Exception as exc:
                # A bug, not a transport failure; the reader must survive it all
                # the same, or this instance would go deaf without saying so.
                logger.exception("Redis subscriber failed unexpectedly")
                failure = exc
            finally:
                self._end_session()
            if self._available:
                self._available = False
                self._outages += 1
                delay = self._backoff_min
                logger.warning("lost the Redis subscriber connection: %r", failure)
                self._announce(False)
            else:
                logger.debug("Redis subscriber connection failed: %r", failure)
            if self._first_attempt is not None and not self._first_attempt.done():
                self._first_attempt.set_result(None)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._backoff_max)

    async def _session(self) -> None:
        """Connect, subscribe everything, then read until the connection fails."""
        pubsub = self._sub.pubsub()
        try:
            await pubsub.connect()  # type: ignore[no-untyped-call]  # redis-py 8.1 leaves it untyped
            # From here on subscribe() sends its own SUBSCRIBE, so every document
            # is either in the snapshot below or subscribed by its caller.
            self._pubsub = pubsub
            await pubsub.subscribe(self._control, self._all, *self._documents)
            ready = self._new_barrier()
            await pubsub.ping(ready)
            await self._read(pubsub, ready)
        finally:
            self._pubsub = None
            with contextlib.suppress(*_TRANSPORT_ERRORS):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _read(self, pubsub: PubSub, ready: bytes) -> None:
        loop = asyncio.get_running_loop()
        pinged = False
        while True:
            # A timed-out read leaves redis-py's parser able to resume.
            reply = await pubsub.get_message(timeout=self._heartbeat)
            if reply is None:
                if pinged:
                    raise TimeoutError(f"no reply from Redis for {2 * self._heartbeat} s")
                await pubsub.ping()
                pinged = True
                continue
            pinged = False
            kind = reply["type"]
            if kind == "message":
                self._dispatch(reply["channel"], reply["data"])
            elif kind == "pong":
                token = reply["data"]
                barrier = self._barriers.pop(token, None)
                if barrier is not None and not barrier.done():
                    barrier.set_result(None)
                if token == ready:
                    self._became_available(loop)

    def _became_available(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._first_attempt is not None and not self._first_attempt.done():
            self._first_attempt.set_result(None)
        if not self._available:
            self._available = True
            logger.info("Redis subscriber connected; %d document(s)", len(self._documents))
            self._announce(True)

    def _end_session(self) -> None:
        for barrier in self._barriers.values():
            _resolve(barrier, None)
        self._barriers.clear()

    def _dispatch(self, channel: bytes, frame: bytes) -> None:
        if channel == self._all or channel == self._control:
            self._dispatch_instance(channel, frame)
            return
        document_id = self._documents.get(channel)
        if document_id is None:
            return  # unsubscribed while the message was on its way
        try:
            message = decode(frame)
        except MalformedMessage as exc:
            logger.warning("dropped a malformed broker message on %r: %s", channel, exc)
            return
        if not isinstance(message, OperationMessage | PresenceMessage | RoleMessage):
            logger.warning("dropped an instance message on the document channel %r", channel)
            return
        if message.origin == self._instance_id or message.document_id != document_id:
            return
        assert self._listener is not None
        try:
            self._listener.on_message(message)
        except Exception:
            logger.exception("broker listener failed on a message for %r", document_id)

    def _dispatch_instance(self, channel: bytes, frame: bytes) -> None:
        try:
            message = decode(frame)
        except MalformedMessage as exc:
            logger.warning("dropped a malformed broker message on %r: %s", channel, exc)
            return
        if isinstance(message, OperationMessage | PresenceMessage | RoleMessage):
            logger.warning("dropped a document message on the instance channel %r", channel)
            return
        if message.origin == self._instance_id:
            return
        if isinstance(message, InfoReply) and message.target != self._instance_id:
            return
        assert self._listener is not None
        try:
            self._listener.on_instance_message(message)
        except Exception:
            logger.exception("broker listener failed on an instance message")

    def _announce(self, available: bool) -> None:
        assert self._listener is not None
        try:
            self._listener.on_availability(available)
        except Exception:
            logger.exception("broker listener failed on availability %s", available)

    def _new_barrier(self) -> bytes:
        token = f"cowrite-barrier-{next(self._tokens)}".encode()
        self._barriers[token] = asyncio.get_running_loop().create_future()
        return token

    async def _barrier(self, pubsub: PubSub) -> None:
        """Wait until Redis has handled every command sent before on ``pubsub``."""
        if self._pubsub is not pubsub:
            return  # the session ended meanwhile; a new one subscribes afresh
        token = self._new_barrier()
        waiter = self._barriers[token]
        await pubsub.ping(token)
        await waiter


def _resolve(future: asyncio.Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)
