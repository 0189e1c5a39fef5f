"""The consumer's delivery fast path (streams/delivery.py): taken only when delivering cannot wait, and
Faust's race against a suspended flow kept for every other case. No broker: the consumer is built but
never started; each test runs in one event loop, as a worker does."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

import faust

from streams import delivery


def in_app(test: Callable[[faust.App, delivery.FastDeliveryConsumer], Awaitable[None]]) -> None:
    async def run() -> None:
        app = faust.App("delivery-test", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)
        delivery.install(app)
        app.flow_control.resume()  # as a started worker with its partitions assigned
        await asyncio.wait_for(test(app, app.consumer), 10)

    asyncio.run(run())


async def delivered(log: list[str]) -> str:
    log.append("delivered")
    return "ok"


def test_a_delivery_that_cannot_wait_is_awaited_directly() -> None:
    async def test(app: faust.App, consumer: delivery.FastDeliveryConsumer) -> None:
        assert isinstance(consumer, delivery.FastDeliveryConsumer) and consumer.delivery_cannot_wait()
        log: list[str] = []
        result = await consumer.wait_first(delivered(log), consumer.suspend_flow.wait())
        assert log == ["delivered"] and result.results == ["ok"] and not result.stopped
        assert (consumer.fast_deliveries, consumer.raced_deliveries) == (1, 0)

    in_app(test)


def test_a_suspended_flow_abandons_a_delivery_that_would_wait() -> None:
    """The case the race exists for: a rebalance suspends the flow while a delivery is stuck."""

    async def test(app: faust.App, consumer: delivery.FastDeliveryConsumer) -> None:
        consumer.suspend_flow.set()
        stuck = asyncio.Event()  # a full stream buffer that nobody drains
        result = await consumer.wait_first(stuck.wait(), consumer.suspend_flow.wait())
        assert result.results == [True]  # suspend_flow.wait() won; the stuck delivery was cancelled
        assert (consumer.fast_deliveries, consumer.raced_deliveries) == (0, 1)

    in_app(test)


def full_channel(app: faust.App):
    channel = app.topic("delivery-test-topic").clone(is_iterator=True)
    app.topics.add(channel)
    for i in range(channel.queue.maxsize):
        channel.queue.put_nowait(i)
    return channel


def test_a_full_stream_buffer_is_waited_out_until_half_drained_then_delivered_directly() -> None:
    async def test(app: faust.App, consumer: delivery.FastDeliveryConsumer) -> None:
        channel = full_channel(app)
        assert not consumer.delivery_cannot_wait()

        async def agent() -> None:  # drains the buffer slowly
            while channel.queue.qsize() > 100:
                channel.queue.get_nowait()
                if channel.queue.qsize() % 100 == 0:
                    await asyncio.sleep(0.001)

        draining = asyncio.ensure_future(agent())
        log: list[str] = []
        await consumer.wait_first(delivered(log), consumer.suspend_flow.wait())
        assert log == ["delivered"] and channel.queue.qsize() <= channel.queue.maxsize // 2 + 1
        assert (consumer.fast_deliveries, consumer.raced_deliveries, consumer.waits_for_room) == (1, 0, 1)
        await draining

    in_app(test)


def test_a_flow_suspended_while_waiting_for_room_takes_the_race() -> None:
    async def test(app: faust.App, consumer: delivery.FastDeliveryConsumer) -> None:
        full_channel(app)
        asyncio.get_running_loop().call_later(0.05, consumer.suspend_flow.set)  # a rebalance starts
        stuck = asyncio.Event()  # nobody drains the buffer
        result = await consumer.wait_first(stuck.wait(), consumer.suspend_flow.wait())
        assert result.results == [True]  # suspend_flow.wait() won; the stuck delivery was cancelled
        assert (consumer.fast_deliveries, consumer.raced_deliveries, consumer.waits_for_room) == (0, 1, 1)

    in_app(test)


def test_suspended_flow_control_a_busy_conductor_and_a_full_producer_buffer_take_the_race() -> None:
    async def test(app: faust.App, consumer: delivery.FastDeliveryConsumer) -> None:
        app.flow_control.suspend()
        assert not consumer.delivery_cannot_wait()
        app.flow_control.resume()
        async with app.topics._tp_to_callback_lock:
            assert not consumer.delivery_cannot_wait()
        buffer = app.producer.buffer
        buffer.max_messages = -1  # any size is over it
        assert not consumer.delivery_cannot_wait()
        buffer.max_messages = 100
        assert consumer.delivery_cannot_wait()

    in_app(test)


def test_other_waits_are_left_to_faust() -> None:
    async def test(app: faust.App, consumer: delivery.FastDeliveryConsumer) -> None:
        other = asyncio.Event()
        other.set()
        await consumer.wait_first(delivered([]), other.wait())
        assert (consumer.fast_deliveries, consumer.raced_deliveries) == (0, 0)

    in_app(test)


class FakeFetcher:
    """aiokafka's fetcher as pace_fetches sees it: _proc_fetch_request returns whether the fetch brought records."""

    def __init__(self, brings: list[bool], clock: list[float], trips: list[float] | None = None) -> None:
        self.brings, self.clock, self.sent_at = list(brings), clock, []
        self.trips = list(trips) if trips else [0.002] * len(brings)  # how long each fetch takes to return

    async def _proc_fetch_request(self, assignment, node_id, request) -> bool:
        self.sent_at.append(self.clock[0])
        self.clock[0] += self.trips.pop(0)
        return self.brings.pop(0)


def paced_fetcher(brings: list[bool], pace_s: float = 0.010, trips: list[float] | None = None):
    clock = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        clock[0] += seconds

    fetcher = FakeFetcher(brings, clock, trips)
    delivery.pace_fetches(fetcher, pace_s, clock=lambda: clock[0], sleep=sleep)
    return fetcher, clock, slept


def test_while_records_keep_coming_fetches_go_one_per_pace() -> None:
    fetcher, clock, slept = paced_fetcher([True, True, False, False, True])

    async def run() -> list[bool]:
        results = []
        for node in (1, 1, 1, 1, 1):
            results.append(await fetcher._proc_fetch_request(None, node, None))
        return results

    assert asyncio.run(run()) == [True, True, False, False, True]
    # the first fetch at once; after each that brought records (answered in 2 ms: they were waiting), the next
    # goes 10 ms after that one was sent; after one that brought nothing, the next goes at once
    assert slept == [0.008, 0.008]
    assert [round(t - 100.0, 3) for t in fetcher.sent_at] == [0.0, 0.01, 0.02, 0.022, 0.024]


def test_a_fetch_that_waited_at_the_broker_for_its_record_is_followed_at_once() -> None:
    """A quiet topic (50 captures/s: one every 20 ms): each fetch waits at the broker until the next record, so
    pacing never holds the one after it back."""
    fetcher, clock, slept = paced_fetcher([True, True, True], trips=[0.015, 0.020, 0.002])

    async def run() -> None:
        for _ in range(3):
            await fetcher._proc_fetch_request(None, 1, None)

    asyncio.run(run())
    assert slept == [] and [round(t - 100.0, 3) for t in fetcher.sent_at] == [0.0, 0.015, 0.035]


def test_pacing_is_per_broker() -> None:
    fetcher, clock, slept = paced_fetcher([True, True, True])

    async def run() -> None:
        await fetcher._proc_fetch_request(None, 1, None)
        await fetcher._proc_fetch_request(None, 2, None)  # another broker: its own fetches are not held back
        await fetcher._proc_fetch_request(None, 1, None)

    asyncio.run(run())
    assert slept == [0.006]  # node 1's second fetch: 10 ms after its first was sent, 4 ms of them gone already


def test_a_fetch_cancelled_while_it_waits_out_the_pace_returns_no_records_as_aiokafka_s_own_does() -> None:
    async def run() -> bool:
        fetcher = FakeFetcher([True, True], [0.0])
        delivery.pace_fetches(fetcher, 60.0)  # the real clock and sleep: the second fetch waits a minute
        assert await fetcher._proc_fetch_request(None, 1, None) is True
        waiting = asyncio.ensure_future(fetcher._proc_fetch_request(None, 1, None))
        await asyncio.sleep(0.01)
        waiting.cancel()  # the assignment changed: aiokafka cancels its pending fetch tasks
        return await waiting

    assert asyncio.run(run()) is False


def test_the_worker_paces_its_fetches_by_its_setting(monkeypatch) -> None:
    import aiokafka

    from streams.settings import Settings

    async def fake_start(self) -> None:  # what AIOKafkaConsumer.start leaves behind, without a broker: its fetcher
        self._fetcher = FakeFetcher([True], [0.0])

    monkeypatch.setattr(aiokafka.AIOKafkaConsumer, "start", fake_start)

    async def test(app: faust.App, consumer: delivery.FastDeliveryConsumer) -> None:
        paced = {}
        for pace_ms in (10.0, 0.0):
            app.packwise_settings = Settings().replace(fetch_pace_ms=pace_ms)
            worker_consumer = consumer._new_consumer_thread()._create_worker_consumer(app.transport)
            await worker_consumer.start()
            paced[pace_ms] = worker_consumer._fetcher._proc_fetch_request.__name__ == "paced"
        assert paced == {10.0: True, 0.0: False}

    in_app(test)


# -- the raw schema ------------------------------------------------------------------------------------------

def test_the_raw_schema_hands_over_the_same_event_as_faust_s_raw_codecs() -> None:
    """Same class, key, value, headers and message as Faust's own decode with `raw` codecs and `bytes` types,
    for every shape Kafka delivers: bytes, empty bytes, a missing key, a tombstone, and headers."""
    from faust.types.tuples import Message

    async def test(app: faust.App, consumer: delivery.FastDeliveryConsumer) -> None:
        stock = faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw",
                             value_serializer="raw").compile(app)
        fast = delivery.RawSchema().compile(app)
        for key, value, headers in [(b"p-1", b'{"a": 1}', []), (b"", b"", []), (None, b"\x00\xff", []),
                                    (b"p-2", None, []), (b"p-3", b"v", [("h", b"1")])]:
            message = Message("t", 0, 7, 0.0, 0, headers, key, value, None)
            ours, theirs = await fast(message), await stock(message)
            assert type(ours) is type(theirs)
            assert (ours.key, ours.value, ours.headers, ours.message) == (theirs.key, theirs.value, theirs.headers,
                                                                          theirs.message)
            assert ours.message is message and ours.app is app

    in_app(test)


def worker_app() -> faust.App:
    from types import SimpleNamespace

    from streams.app import create_app
    from streams.settings import Settings

    scorer = SimpleNamespace(legacy_targets={}, version="none")  # the model is not needed to wire the app
    return create_app(Settings().replace(app_id="worker-wiring-test"), scorer)  # type: ignore[arg-type]


def test_the_worker_s_input_topics_use_the_raw_schema() -> None:
    inputs = [agent.channel for agent in worker_app().agents.values()]
    assert inputs and all(isinstance(channel.schema, delivery.RawSchema) for channel in inputs)


def test_the_worker_commits_soon_after_each_flush() -> None:
    """Events are acknowledged only by the state flush that makes their effects durable: Faust's commit loop, at
    its 2.8 s, left the committed offsets up to 2.8 s behind the durable state (and that much more to read again
    after a crash); it now looks for released offsets several times per flush interval."""
    from streams.settings import Settings

    assert worker_app().conf.broker_commit_interval <= Settings().state_flush_interval_s / 4
