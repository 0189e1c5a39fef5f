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
