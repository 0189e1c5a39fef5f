"""A Faust consumer that hands fetched messages to the streams without four asyncio tasks per message.

Faust's fetch loop delivers every message with `wait_first(callback(message), suspend_flow.wait())`:
the delivery races the flow being suspended by a rebalance, so a delivery stuck on a full stream buffer
is abandoned rather than slipped into a stream after its partition may have moved to another worker.
That race costs four tasks and an `asyncio.wait` per message, about half of a bare Faust worker's CPU
per message on this project's hardware (bench/RESULTS-worker.md).

The delivery can only wait when the flow is suspended, the conductor is re-indexing its subscriptions,
the producer buffer is over its limit, or a stream buffer is full. When none of these hold, it runs to
completion without yielding to the event loop, so nothing can suspend the flow while it runs and the
race has one possible winner: this consumer awaits the delivery directly then, and leaves every other
case to Faust's race. Tested in tests/test_delivery.py; pinned to faust-streaming 0.15 in pyproject.toml.
"""

from __future__ import annotations

from typing import Any, Coroutine

import faust
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from mode.services import WaitResults


def _awaits_event(coro: Any, event: Any) -> bool:
    """Is `coro` a not-yet-started `event.wait()`?"""
    frame = getattr(coro, "cr_frame", None)
    return frame is not None and frame.f_locals.get("self") is event


class FastDeliveryConsumer(AIOKafkaConsumer):
    fast_deliveries = 0  # counted for tests and diagnostics
    raced_deliveries = 0

    def delivery_cannot_wait(self) -> bool:
        """True when delivering a message to the streams runs to completion without yielding."""
        app = self.app
        if self.suspend_flow.is_set() or not app.flow_control.is_active():
            return False
        conductor = app.topics
        if conductor._tp_to_callback_lock.locked():
            return False
        buffer = app.producer.buffer
        if buffer.size > buffer.max_messages:
            return False
        return not any(channel.queue.full() for channel in conductor._topics)

    async def wait_first(self, *coros: Coroutine | Any, timeout: Any = None) -> WaitResults:
        if (len(coros) == 2 and timeout is None and _awaits_event(coros[1], self.suspend_flow)
                and self.delivery_cannot_wait()):
            coros[1].close()
            self.fast_deliveries += 1
            return WaitResults([coros[0]], [await coros[0]], False)
        if len(coros) == 2 and _awaits_event(coros[1], self.suspend_flow):
            self.raced_deliveries += 1
        return await super().wait_first(*coros, timeout=timeout)


def install(app: faust.App) -> None:
    """Make `app` create a FastDeliveryConsumer (call before the app starts)."""
    app.transport.Consumer = FastDeliveryConsumer
