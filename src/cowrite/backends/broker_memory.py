"""The in-process broker: one instance (the default), or several sharing a hub.

A ``MemoryHub`` stands for the transport (what Redis is to ``RedisBroker``).
Every ``MemoryBroker`` made without a hub gets a private one, which is what a
single cowrite instance wants: publishing then reaches nobody, since an
instance never hears itself.  Tests and core tests give several brokers one
hub to play several instances in one process, and ``MemoryHub.set_down``
simulates an outage of the transport.

Delivery is scheduled with ``loop.call_soon``, one callback per recipient in
publish order, so per-document FIFO holds and no listener runs inside
``publish``.  Messages go through the shared wire format (``broker.encode`` /
``broker.decode``) although they never leave the process: a listener gets its
own copy of ``state``, and what Redis would refuse this refuses too.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from itertools import count

from cowrite.backends.broker import (
    BrokerListener,
    BrokerMessage,
    InfoReply,
    InstanceMessage,
    OperationMessage,
    PresenceMessage,
    RoleMessage,
    check_origin,
    decode,
    encode,
)
from cowrite.errors import LocalError

logger = logging.getLogger(__name__)


class MemoryHub:
    """Connects the ``MemoryBroker`` instances of one process.

    ``set_down(True)`` simulates losing the transport: every started broker
    becomes unavailable (``on_availability(False)``, ``outages`` + 1),
    ``publish`` returns ``False`` and messages not yet delivered are lost.
    ``set_down(False)`` restores it (``on_availability(True)``).
    """

    def __init__(self) -> None:
        self._brokers: dict[str, MemoryBroker] = {}
        self._down = False

    @property
    def down(self) -> bool:
        """Whether the simulated transport is down."""
        return self._down

    def set_down(self, down: bool) -> None:
        """Take the simulated transport down or bring it back."""
        if down == self._down:
            return
        self._down = down
        for broker in list(self._brokers.values()):
            broker._set_available(not down)

    def _attach(self, broker: MemoryBroker) -> None:
        if broker.instance_id in self._brokers:
            raise LocalError(f"instance id {broker.instance_id!r} is already on this hub")
        self._brokers[broker.instance_id] = broker

    def _detach(self, broker: MemoryBroker) -> None:
        if self._brokers.get(broker.instance_id) is broker:
            del self._brokers[broker.instance_id]

    def _publish(self, message: BrokerMessage) -> bool:
        if len(self._brokers) < 2:
            # One instance (``cowrite serve`` without Redis): nobody to tell.
            # Skipping the encoding here is most of the broker's cost per edit.
            return not self._down
        frame = encode(message)
        if self._down:
            return False
        recipients = [
            broker
            for broker in self._brokers.values()
            if broker.instance_id != message.origin and broker._is_subscribed(message.document_id)
        ]
        for broker in recipients:
            broker._schedule(message.document_id, frame)
        return True

    def _publish_instances(self, message: InstanceMessage) -> int:
        frame = encode(message)
        if self._down:
            return 0
        target = message.target if isinstance(message, InfoReply) else None
        recipients = [
            broker
            for broker in self._brokers.values()
            if broker.instance_id != message.origin
            and broker._available
            and (target is None or broker.instance_id == target)
        ]
        for broker in recipients:
            broker._schedule_instance(frame)
        return len(recipients)


class MemoryBroker:
    """Implements ``Broker`` in this process; see ``cowrite.backends.broker``.

    ``hub`` connects it to other ``MemoryBroker`` instances (a private hub by
    default); ``instance_id`` defaults to a random id.
    """

    def __init__(self, hub: MemoryHub | None = None, *, instance_id: str | None = None) -> None:
        self._hub = hub if hub is not None else MemoryHub()
        self._instance_id = instance_id if instance_id is not None else uuid.uuid4().hex
        self._listener: BrokerListener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._stopped = False
        self._available = False
        self._outages = 0
        # document id -> token of the current subscription.  A delivery carries
        # the token it was scheduled for, so nothing published before an
        # unsubscribe is delivered after it, even if the document was
        # subscribed again in between.
        self._documents: dict[str, int] = {}
        self._tokens = count(1)

    @property
    def instance_id(self) -> str:
        return self._instance_id

    @property
    def available(self) -> bool:
        return self._available

    @property
    def outages(self) -> int:
        return self._outages

    @property
    def hub(self) -> MemoryHub:
        """The hub this broker publishes to."""
        return self._hub

    async def start(self, listener: BrokerListener) -> None:
        if self._started:
            raise LocalError("MemoryBroker.start() called twice")
        self._hub._attach(self)
        self._started = True
        self._listener = listener
        self._loop = asyncio.get_running_loop()
        self._set_available(not self._hub.down)

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._available = False
        self._documents.clear()
        self._hub._detach(self)

    async def subscribe(self, document_id: str) -> None:
        if not self._stopped and document_id not in self._documents:
            self._documents[document_id] = next(self._tokens)

    async def unsubscribe(self, document_id: str) -> None:
        self._documents.pop(document_id, None)

    async def publish(self, message: BrokerMessage) -> bool:
        check_origin(message, self._instance_id)
        if not self._started or self._stopped:
            return False
        return self._hub._publish(message)

    async def publish_many(self, messages: Sequence[BrokerMessage]) -> int:
        for message in messages:
            check_origin(message, self._instance_id)
        if not self._started or self._stopped:
            return 0
        hub = self._hub
        return sum(hub._publish(message) for message in messages)

    async def publish_instances(self, message: InstanceMessage) -> int:
        check_origin(message, self._instance_id)
        if not self._started or self._stopped:
            return 0
        return self._hub._publish_instances(message)

    async def ping(self) -> bool:
        return not self._hub.down

    # --- called by the hub ------------------------------------------------------

    def _is_subscribed(self, document_id: str) -> bool:
        return self._available and document_id in self._documents

    def _schedule(self, document_id: str, frame: bytes) -> None:
        assert self._loop is not None
        self._loop.call_soon(self._deliver, document_id, self._documents[document_id], frame)

    def _deliver(self, document_id: str, token: int, frame: bytes) -> None:
        if not self._available or self._documents.get(document_id) != token:
            return  # unsubscribed, stopped or down since it was published
        assert self._listener is not None
        message = decode(frame)
        assert isinstance(message, OperationMessage | PresenceMessage | RoleMessage)
        try:
            self._listener.on_message(message)
        except Exception:
            logger.exception("broker listener failed on a message for %r", document_id)

    def _schedule_instance(self, frame: bytes) -> None:
        assert self._loop is not None
        self._loop.call_soon(self._deliver_instance, frame)

    def _deliver_instance(self, frame: bytes) -> None:
        if not self._available:
            return  # stopped or down since it was published
        assert self._listener is not None
        message = decode(frame)
        assert not isinstance(message, OperationMessage | PresenceMessage | RoleMessage)
        try:
            self._listener.on_instance_message(message)
        except Exception:
            logger.exception("broker listener failed on an instance message")

    def _set_available(self, available: bool) -> None:
        if not self._started or self._stopped or available == self._available:
            return
        self._available = available
        if not available:
            self._outages += 1
        assert self._loop is not None
        self._loop.call_soon(self._announce, available)

    def _announce(self, available: bool) -> None:
        if self._stopped or self._listener is None:
            return
        try:
            self._listener.on_availability(available)
        except Exception:
            logger.exception("broker listener failed on availability %s", available)
