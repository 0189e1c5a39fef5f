"""Replaying dead letters after a fix: the original key and value go back to their input topic, once.

Once is kept by the console's store: a dead letter is claimed (marked `sending`) before it is produced and
marked `sent` when the broker acknowledged it, so a second replay of the same coordinates is refused, from the
console or from `packwise dlq replay` alike. A crash between the two leaves it `sending` ("replay
unconfirmed"): replaying it again needs --force, and the worker's event-id deduplication keeps a shipment,
damage report or test result that did arrive from counting twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from streams.console.store import ConsoleStore, Folded, Kind
from streams.errors import PackwiseError
from streams.settings import Settings
from streams.topics import client_config, producer_config

REPLAY_HEADER = "packwise-replay-of"


@dataclass(frozen=True)
class Coordinates:
    topic: str
    partition: int
    offset: int

    @classmethod
    def parse(cls, text: str) -> "Coordinates":
        """TOPIC/PARTITION/OFFSET (a topic name has no slash)."""
        try:
            topic, partition, offset = text.rsplit("/", 2)
            if not topic or int(partition) < 0 or int(offset) < 0:
                raise ValueError
            return cls(topic, int(partition), int(offset))
        except ValueError:
            raise PackwiseError(f"{text!r} is not a dead letter's coordinates: expected DLQ_TOPIC/PARTITION/OFFSET, "
                                "e.g. shipments.dlq/0/42 (the console's dead-letter page shows them)") from None

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass
class ReplayReport:
    sent: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # replayed before, or not a dead letter

    def line(self) -> str:
        text = f"replayed {len(self.sent)} dead letter{'s' if len(self.sent) != 1 else ''}"
        return text + (f"; refused {len(self.refused)}: " + "; ".join(self.refused) if self.refused else "")


def _read_dead_letter(settings: Settings, where: Coordinates, timeout_s: float = 10.0):
    """The dead-letter message at `where`, read from Kafka (its original may be larger than the store keeps)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(client_config(settings, **{"group.id": f"{settings.app_id}-console-replay",
                                                   "enable.auto.commit": False}))
    try:
        consumer.assign([TopicPartition(where.topic, where.partition, where.offset)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                if message.error().fatal():
                    raise PackwiseError(f"reading {where} failed: {message.error().str()}")
                continue
            return message if message.offset() == where.offset else None
        return None
    finally:
        consumer.close()


def replay(settings: Settings, store: ConsoleStore, targets: list[Coordinates], force: bool = False) -> ReplayReport:
    from confluent_kafka import KafkaException, Producer

    from streams.serde import Serde, SerdeError

    serde = Serde.for_settings(settings)
    producer = Producer(producer_config(settings, acks="all"))
    report = ReplayReport()
    for where in targets:
        if not where.topic.endswith(".dlq"):
            report.refused.append(f"{where}: not a dead-letter topic")
            continue
        message = _read_dead_letter(settings, where)
        if message is None:
            report.refused.append(f"{where}: no message there (deleted by retention, or a wrong offset)")
            continue
        try:
            record = serde.decode("dead_letter", message.value())
        except SerdeError as error:
            report.refused.append(f"{where}: not a dead letter ({error})")
            continue
        # known to the store before it is claimed (the console's reader may not have reached it yet)
        store.record_dead_letter(Folded(where.topic, where.partition, where.offset, Kind.DEAD_LETTER, None, record))
        if force:
            store.finish_replay(where.topic, where.partition, where.offset, None)
        if not store.claim_replay(where.topic, where.partition, where.offset, int(time.time() * 1000)):
            report.refused.append(f"{where}: replayed before")
            continue
        if record.get("original_value") is None:
            store.finish_replay(where.topic, where.partition, where.offset, "unavailable")
            report.refused.append(f"{where}: the dead letter does not keep its original (too large)")
            continue
        errors: list[str] = []
        producer.produce(record["topic"], key=record.get("original_key"), value=record["original_value"],
                         headers=[(REPLAY_HEADER, str(where).encode())],
                         on_delivery=lambda error, _m: errors.append(error.str()) if error else None)
        try:
            remaining = producer.flush(15)
        except KafkaException as error:
            errors.append(str(error))
            remaining = 0
        if errors or remaining:
            store.finish_replay(where.topic, where.partition, where.offset, None)  # not sent: may be tried again
            report.refused.append(f"{where}: the broker did not take it ({'; '.join(errors) or 'timed out'})")
            continue
        store.finish_replay(where.topic, where.partition, where.offset, "sent")
        report.sent.append(str(where))
    return report
