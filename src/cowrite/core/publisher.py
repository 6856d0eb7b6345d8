"""What this instance tells the others: the queue in front of the broker.

Invariant: messages reach ``Broker.publish_many`` in the order they were
queued (one task hands them over, up to 1000 at a time: a burst costs one
round trip and no task per message), and queueing one never blocks, awaits
or fails.  Delivery beyond that is the broker's (at-most-once,
backends/broker.py): a hand-over that fails is logged and counted, not
retried; the receivers' sequencers fill what they miss from the log.
"""

from __future__ import annotations

import asyncio
import logging

from cowrite.backends.broker import Broker, BrokerMessage
from cowrite.core.tasks import Wakeup

# The collaboration service's logger: its name is in every line it logs.
log = logging.getLogger("cowrite.collab")


class Publisher:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.queue: list[BrokerMessage] = []
        self._ready = Wakeup()
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.failures = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="broker-publisher")

    async def drain(self) -> None:
        """Give the task a moment (at most a second) to hand over what is queued."""
        for _ in range(100):
            if not self.queue:
                break
            await asyncio.sleep(0.01)

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def publish(self, message: BrokerMessage) -> None:
        queue = self.queue
        queue.append(message)
        if len(queue) == 1:
            self._ready.set()

    async def _run(self) -> None:
        """Hand queued messages to the broker in order, all that are queued at
        once (one ``publish_many``: the broker pipelines them), so a burst
        costs one round trip and no task per message."""
        while True:
            if not self.queue:
                self._ready.clear()
                await self._ready.wait()
                continue
            batch = self.queue[:1000]
            del self.queue[:1000]
            try:
                sent = await self.broker.publish_many(batch)
            except Exception:
                log.exception("publish failed")
                sent = 0
            self.published += sent
            self.failures += len(batch) - sent
