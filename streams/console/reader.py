"""The console's Kafka side: a reader thread that folds the output topics, the evidence it audits and the
dead-letter topics into the store; a lag poller for the workers' consumer group; a scraper of the workers'
/metrics. Nothing here renders anything.

The reader is assigned every partition explicitly at the offset the store holds (stored with the state in
one SQLite transaction), so its position is exactly its state; it also commits those offsets to its own
consumer group (`<app id>-console`) so that its lag shows up in Kafka's tools like any consumer's.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Callable

from prometheus_client.parser import text_string_to_metric_families

from streams.console.store import ConsoleStore, Folded, Kind
from streams.errors import PackwiseError
from streams.logs import get_logger
from streams.settings import Settings
from streams.topics import TopicRole, admin_client, client_config, existing_partitions, topic_specs

log = get_logger("packwise.console")
BATCH = 2000
LAG_EVERY_S = 5.0
SCRAPE_EVERY_S = 5.0


def console_group(settings: Settings) -> str:
    return f"{settings.app_id}-console"


def topics_read(settings: Settings) -> dict[str, str]:
    """Topic -> the contract the console folds it as: the three outputs, the evidence it audits the certified
    cohort with (shipments, damage reports, test results) and every dead-letter topic."""
    from streams.processor import TopicNames

    names = TopicNames.for_settings(settings)
    kinds = {names.decisions: Kind.DECISION, names.relabels: Kind.RELABEL, names.tests: Kind.TEST_REQUEST,
             names.test_results: Kind.TEST_RESULT, names.shipments: Kind.SHIPMENT,
             names.damage_reports: Kind.DAMAGE_REPORT}
    kinds.update({spec.name: Kind.DEAD_LETTER for spec in topic_specs(settings)
                  if spec.role is TopicRole.DEAD_LETTER})
    return kinds


class ConsoleReader(threading.Thread):
    """Reads every partition of `topics_read` from the offsets in the store, folds each batch in one
    transaction, and reports when it first reached the end of every partition (the catch-up)."""

    def __init__(self, settings: Settings, store: ConsoleStore, connect_timeout_s: float = 15.0) -> None:
        super().__init__(name="packwise-console-reader", daemon=True)
        from streams.serde import Serde

        self.settings = settings
        self.store = store
        self.kinds = topics_read(settings)
        present = existing_partitions(admin_client(settings), settings, connect_timeout_s)
        missing = [name for name in self.kinds if name not in present]
        if missing:
            raise PackwiseError(f"topics missing on {settings.bootstrap_servers}: {', '.join(missing)}; create them "
                                "with `packwise topics create`")
        self.partitions = {name: present[name] for name in self.kinds}
        self.serde = Serde.for_settings(settings)
        self.stopping = threading.Event()
        self.caught_up = threading.Event()
        self.started_at = time.monotonic()
        self.caught_up_s: float | None = None
        self.failure: str | None = None
        self.folded = 0

    def run(self) -> None:
        try:
            self._run()
        except Exception as error:  # the pages say the reader stopped, and why
            self.failure = f"{type(error).__name__}: {error}"
            log.error("console_reader_failed", error=repr(error), exc_info=True)

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

        consumer = Consumer(client_config(self.settings, **{
            "group.id": console_group(self.settings), "enable.auto.commit": False,
            "enable.auto.offset.store": False, "enable.partition.eof": True, "auto.offset.reset": "earliest"}))
        stored = self.store.offsets()
        assignment = [TopicPartition(t, p, stored.get((t, p), OFFSET_BEGINNING))
                      for t, count in self.partitions.items() for p in range(count)]
        at_end: set[tuple[str, int]] = set()
        try:
            consumer.assign(assignment)
            while not self.stopping.is_set():
                batch: list[Folded] = []
                for message in consumer.consume(num_messages=BATCH, timeout=0.2):
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            at_end.add((message.topic(), message.partition()))
                        elif error.fatal():
                            raise PackwiseError(f"reading {message.topic()} failed: {error.str()}")
                        continue
                    batch.append(self._decode(message))
                if batch:
                    self.folded += self.store.apply(batch)
                    positions = {}
                    for m in batch:
                        positions[(m.topic, m.partition)] = m.offset + 1
                    consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in positions.items()],
                                    asynchronous=True)
                if not self.caught_up.is_set() and len(at_end) == len(assignment):
                    self.caught_up_s = time.monotonic() - self.started_at
                    self.caught_up.set()
                    log.info("console_caught_up", seconds=round(self.caught_up_s, 2), messages=self.folded)
        finally:
            consumer.close()

    def _decode(self, message) -> Folded:
        from streams.serde import SerdeError

        topic, kind = message.topic(), self.kinds[message.topic()]
        key = message.key().decode("utf-8", errors="replace") if message.key() is not None else None
        value = message.value()
        try:
            record = None if value is None else self.serde.decode(kind, value)
        except SerdeError:  # counted and shown; the console goes on
            return Folded(topic, message.partition(), message.offset(), kind, key, None, undecodable=True)
        return Folded(topic, message.partition(), message.offset(), kind, key, record)

    def stop(self) -> None:
        self.stopping.set()


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: the group has committed nothing there yet
    end: int

    @property
    def lag(self) -> int:
        return self.end - (self.committed or 0)


class LagPoller(threading.Thread):
    """The workers' consumer group lag on every input partition, polled every LAG_EVERY_S: what Kafka says
    the group has committed against each partition's end. It joins no group (committed offsets are fetched,
    never written)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="packwise-console-lag", daemon=True)
        self.settings = settings
        self.lags: list[PartitionLag] = []
        self.error: str | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        inputs = [spec.name for spec in topic_specs(self.settings) if spec.role is TopicRole.INPUT]
        consumer = Consumer(client_config(self.settings, **{"group.id": self.settings.app_id,
                                                             "enable.auto.commit": False}))
        try:
            while not self.stopping.is_set():
                try:
                    metadata = consumer.list_topics(timeout=5)
                    partitions = [TopicPartition(t, p) for t in inputs if t in metadata.topics
                                  for p in sorted(metadata.topics[t].partitions)]
                    committed = consumer.committed(partitions, timeout=5)
                    lags = []
                    for tp in committed:
                        _, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=5)
                        lags.append(PartitionLag(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else None, high))
                    self.lags, self.error = lags, None
                except Exception as error:  # shown on the overview; polled again
                    self.error = f"{type(error).__name__}: {error}"
                self.stopping.wait(LAG_EVERY_S)
        finally:
            consumer.close()


@dataclass(frozen=True)
class WorkerScrape:
    url: str
    up: bool
    error: str | None = None
    model_versions: tuple[str, ...] = ()
    events: float = 0.0
    dead_letters: float = 0.0
    scoring_failures: float = 0.0
    at: float = 0.0


def scrape(url: str, timeout_s: float = 3.0) -> WorkerScrape:
    """One worker's /metrics, summed into what the overview shows."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # an operator-configured worker URL
            text = response.read().decode("utf-8", errors="replace")
    except Exception as error:
        return WorkerScrape(url, up=False, error=f"{type(error).__name__}: {error}", at=time.time())
    sums: dict[str, float] = {}
    versions: list[str] = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "packwise_model_info" and sample.value == 1:
                versions.append(sample.labels.get("version", "?"))
            else:
                sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return WorkerScrape(url, up=True, model_versions=tuple(sorted(versions)),
                        events=sums.get("packwise_events_total", 0.0),
                        dead_letters=sums.get("packwise_dead_letters_total", 0.0),
                        scoring_failures=sums.get("packwise_scoring_failures_total", 0.0), at=time.time())


class Scraper(threading.Thread):
    def __init__(self, urls: list[str], fetch: Callable[[str], WorkerScrape] = scrape) -> None:
        super().__init__(name="packwise-console-scrape", daemon=True)
        self.urls = urls
        self.fetch = fetch
        self.results: dict[str, WorkerScrape] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for url in self.urls:
                self.results[url] = self.fetch(url)
            self.stopping.wait(SCRAPE_EVERY_S)
