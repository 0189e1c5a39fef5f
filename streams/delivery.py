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

import asyncio
import time
from typing import Any, Awaitable, Callable, Coroutine

import faust
from faust.sensors import Monitor
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from mode.services import WaitResults


def _awaits_event(coro: Any, event: Any) -> bool:
    """Is `coro` a not-yet-started `event.wait()`?"""
    frame = getattr(coro, "cr_frame", None)
    return frame is not None and frame.f_locals.get("self") is event


# How long a fetch may wait at the broker for data. Faust's driver hard-codes 1,500 ms; requests on the same
# connection queue behind a waiting fetch, so each of a recovery's offset queries could wait that long at start-up
# and at every rebalance. 500 ms is the Kafka clients' default.
FETCH_MAX_WAIT_MS = 500


def pace_fetches(fetcher: Any, pace_s: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """Make aiokafka's `fetcher` send a fetch to a broker no sooner than `pace_s` after it sent the last one that
    brought records. aiokafka sends the next fetch the moment one returns, and a fetch returns on the first
    record: at a few hundred captures a second, each fetch carried one or two, and the worker spent a sixth of
    its samples writing fetch requests (bench/RESULTS-worker.md). Paced, the records that arrive meanwhile come
    in one fetch. A fetch that waited at the broker for its records (longer than `pace_s`: a quiet topic) is
    followed at once, as is one that brought nothing, so a trickle of messages is not held back."""
    original = fetcher._proc_fetch_request  # (assignment, node_id, request) -> True when it brought records
    last_sent: dict[Any, float] = {}  # per broker: when the last fetch that brought records was sent

    async def paced(assignment: Any, node_id: Any, request: Any) -> bool:
        wait = last_sent.get(node_id, float("-inf")) + pace_s - clock()
        if wait > 0:
            try:
                await sleep(wait)
            except asyncio.CancelledError:  # the assignment changed: what aiokafka's own fetch returns then
                return False
        sent = clock()
        brought = await original(assignment, node_id, request)
        if brought:
            last_sent[node_id] = sent
        return brought

    fetcher._proc_fetch_request = paced


class ShortFetchConsumerThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts its fetcher (aiokafka 0.x)
        settings = getattr(self.consumer.app, "packwise_settings", None)
        pace_s = settings.fetch_pace_ms / 1000 if settings is not None else 0.0
        if pace_s > 0:
            start = consumer.start

            async def start_paced() -> None:  # the fetcher exists once the consumer has started
                await start()
                pace_fetches(consumer._fetcher, pace_s)

            consumer.start = start_paced
        return consumer


class FastDeliveryConsumer(AIOKafkaConsumer):
    fast_deliveries = 0  # counted for tests and diagnostics
    raced_deliveries = 0

    waits_for_room = 0

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return ShortFetchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def delivery_cannot_wait(self) -> bool:
        """True when delivering a message to the streams runs to completion without yielding."""
        if not self._flowing():
            return False
        for channel in self.app.topics._topics:
            if channel.queue.full():
                return False
        return True

    def _flowing(self) -> bool:
        """Nothing but a full stream buffer could make a delivery wait."""
        app = self.app
        if self.suspend_flow.is_set() or not app.flow_control.is_active():
            return False
        if app.topics._tp_to_callback_lock.locked():
            return False
        buffer = app.producer.buffer
        return self._buffered(buffer) <= buffer.max_messages

    async def _wait_for_room(self) -> None:
        """A stream buffer is full (the agents are slower than the fetcher): wait until every buffer has
        drained to half, or until the flow stops, polling every 2 ms. One wait then lets the next thousands
        of messages take the fast path, where a race per message would cost four tasks each."""
        self.waits_for_room += 1
        topics = self.app.topics._topics
        while self._flowing() and any(c.queue.qsize() > c.queue.maxsize // 2 for c in topics):
            await asyncio.sleep(0.002)

    def _buffered(self, buffer: Any) -> int:
        """buffer.size without reading the app's settings on every message (a tenth of this check's cost)."""
        threaded = self.__dict__.get("_producer_threaded")
        if threaded is None:
            threaded = self.__dict__["_producer_threaded"] = bool(self.app.conf.producer_threaded)
        return buffer.size if threaded else len(buffer.pending._queue)

    async def wait_first(self, *coros: Coroutine | Any, timeout: Any = None) -> WaitResults:
        if len(coros) == 2 and timeout is None and _awaits_event(coros[1], self.suspend_flow):
            fast = self.delivery_cannot_wait()
            if not fast and self._flowing():
                await self._wait_for_room()
                fast = self.delivery_cannot_wait()  # checked again after the wait: nothing yields from here on
            if fast:
                coros[1].close()
                self.fast_deliveries += 1
                return WaitResults([coros[0]], [await coros[0]], False)
            self.raced_deliveries += 1
        return await super().wait_first(*coros, timeout=timeout)


class RawSchema(faust.Schema):
    """Keys and values as the bytes Kafka holds (None stays None), handed to the streams without the serializer
    registry's per-message work: with `raw` codecs and `bytes` types, Faust's decode runs a coroutine through
    five layers (schema, registry, codec chain, payload preparation) for each of key and value, only to return
    the bytes it was given (a twentieth of the worker's CPU on the statistics path, bench/RESULTS-worker.md).
    The event is the one Faust's decode creates: the same class, the same fields."""

    def __init__(self) -> None:
        super().__init__(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    def compile(self, app: Any, *, on_key_decode_error: Any = None, on_value_decode_error: Any = None,
                default_propagate: bool = False) -> Callable[..., Awaitable[Any]]:
        event = app.conf.Event  # what app.create_event builds, looked up once: the setting costs a lookup per call

        async def decode(message: Any, *, propagate: bool = default_propagate) -> Any:
            return event(app, message.key, message.value, message.headers, message)

        return decode


def install(app: faust.App) -> None:
    """Make `app` create a FastDeliveryConsumer (call before the app starts)."""
    app.transport.Consumer = FastDeliveryConsumer


class PerMessageQuietMonitor(Monitor):
    """Faust's Monitor without its per-message bookkeeping (event counts, per-stream timings in deques):
    packwise exports its own counters, and the Monitor's cost every worker paid on every message. Used
    unless PACKWISE_FAUST_METRICS asks for Faust's metrics; commits, sends and rebalances are still
    recorded."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None
