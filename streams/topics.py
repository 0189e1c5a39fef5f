"""Every topic packwise reads or writes, defined once: name, contract, partitions, cleanup, retention.

Invariant 1 (DESIGN.md): all input topics are keyed by product id and share one partition count, so one
worker owns every event of a product. `packwise topics create` makes them through the AdminClient and is
safe to repeat; workers check them with `verify_topics` before they start.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from streams.errors import PackwiseError
from streams.security import ConnectionErrors, librdkafka_security
from streams.settings import Settings

DAY_MS = 24 * 3600 * 1000


class TopicRole(str, enum.Enum):
    INPUT = "input"
    OUTPUT = "output"
    DEAD_LETTER = "dead-letter"
    CHANGELOG = "changelog"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    contract: str  # the Avro contract of its values (streams.serde.CONTRACTS); "" for table changelogs (JSON)
    role: TopicRole
    partitions: int
    replication_factor: int
    cleanup_policy: str  # "delete" or "compact"
    retention_ms: int  # -1: forever
    doc: str

    def config(self) -> dict[str, str]:
        return {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}


# (base name, contract, role, cleanup policy, retention in days or -1, what flows on it)
_TOPICS = (
    ("tunnel-captures", "tunnel_capture", TopicRole.INPUT, "delete", 7, "camera-tunnel captures (views + measurements)"),
    ("catalog-updates", "catalog_update", TopicRole.INPUT, "compact", -1, "latest catalog record per product; null deletes"),
    ("shipments", "shipment", TopicRole.INPUT, "delete", 30, "outbound shipments with their package type"),
    ("damage-reports", "damage_report", TopicRole.INPUT, "delete", 30, "customer damage reports (returns center, reviews, contact)"),
    ("test-results", "test_result", TopicRole.INPUT, "delete", 30, "physical test results from the labs, per package type"),
    ("pack-type-decisions", "pack_type_decision", TopicRole.OUTPUT, "compact", -1, "latest pack-type decision per product"),
    ("relabel-triggers", "relabel_trigger", TopicRole.OUTPUT, "delete", 30, "relabel stock when evidence contradicts a decision"),
    ("test-requests", "test_request", TopicRole.OUTPUT, "delete", 30, "physical tests for people, opened and closed, with the weight a pass saves"),
)
# The worker's tables (streams/app.py), whose changelogs `topics create` makes up front: a worker then
# never starts before its changelogs exist, and they are co-partitioned with the inputs from day one.
TABLES = {
    "catalog": "latest catalog record per product",
    "captures": "latest tunnel capture per product",
    "pending": "captures waiting for their catalog record",
    "products": "per product, one record: model verdict, decision, requested tests, and its evidence (shipments, "
                "damages and physical test outcomes per package type, with the last offsets and event ids applied)",
    "damage_stats": "read only: the evidence of products an older worker kept here, until their next event moves it "
                    "into products",
}
DEAD_LETTER_SUFFIX = ".dlq"
DEAD_LETTER_RETENTION_DAYS = 30


def _retention(days: int) -> int:
    return -1 if days < 0 else days * DAY_MS


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """All topics for these settings: inputs, outputs, and one dead-letter topic per input."""
    specs = [
        TopicSpec(settings.topic_prefix + base, contract, role, settings.partitions,
                  settings.replication_factor, cleanup, _retention(days), doc)
        for base, contract, role, cleanup, days, doc in _TOPICS
    ]
    specs += [
        TopicSpec(spec.name + DEAD_LETTER_SUFFIX, "dead_letter", TopicRole.DEAD_LETTER, settings.partitions,
                  settings.replication_factor, "delete", _retention(DEAD_LETTER_RETENTION_DAYS),
                  f"messages from {spec.name} that could not be decoded or validated")
        for spec in specs if spec.role is TopicRole.INPUT
    ]
    specs += [
        TopicSpec(f"{settings.app_id}-{table}-changelog", "", TopicRole.CHANGELOG, settings.partitions,
                  settings.replication_factor, "compact", -1, f"changelog of the worker table '{table}': {doc}")
        for table, doc in TABLES.items()
    ]
    return specs


def contract_subjects(settings: Settings) -> dict[str, list[str]]:
    """Per contract, the registry subjects of the topics that carry it (TopicNameStrategy, streams/serde.py)."""
    from streams.serde import subject_name

    subjects: dict[str, list[str]] = {}
    for spec in topic_specs(settings):
        if spec.contract:
            subjects.setdefault(spec.contract, []).append(subject_name(spec.name))
    return subjects


def client_config(settings: Settings, **extra: object) -> dict[str, object]:
    """Configuration shared by every confluent-kafka client packwise makes, its security (TLS, SASL) included.
    librdkafka's own connection log lines are silenced (log_level 0): failures reach the operator as one
    PackwiseError instead."""
    return {"bootstrap.servers": settings.bootstrap_servers, "socket.connection.setup.timeout.ms": 5000,
            "log_level": 0, **librdkafka_security(settings), **extra}


def producer_config(settings: Settings, **extra: object) -> dict[str, object]:
    """Producers partition keys with murmur2 like Kafka's Java clients and aiokafka (librdkafka's default is
    CRC32): the product's events then land on the partition Faust's tables expect (invariant 1)."""
    return client_config(settings, **{"partitioner": "murmur2_random", "enable.idempotence": True,
                                      "linger.ms": 5, **extra})


def admin_client(settings: Settings) -> AdminClient:
    """An AdminClient that remembers connection errors no retry cures (wrong password, untrusted certificate,
    wrong protocol), so existing_partitions reports them at once instead of waiting out its timeout."""
    errors = ConnectionErrors(settings)
    admin = AdminClient(client_config(settings, error_cb=errors, logger=errors.logger(), log_level=7))
    admin.packwise_errors = errors
    return admin


def existing_partitions(admin: AdminClient, settings: Settings, timeout_s: float = 15.0) -> dict[str, int]:
    """Partition count of every topic on the cluster (that this principal may describe); an unreachable
    cluster, or one that refuses this client, is a PackwiseError."""
    errors: ConnectionErrors | None = getattr(admin, "packwise_errors", None)
    deadline = time.monotonic() + timeout_s
    while True:
        # short slices, so a refusal recorded by the error callback ends the wait at once
        slice_s = min(1.0, max(0.1, deadline - time.monotonic())) if errors else timeout_s
        try:
            metadata = admin.list_topics(timeout=slice_s)
            break
        except KafkaException as error:
            if errors:
                admin.poll(0)  # serves the error callback
                errors.raise_if_fatal()
            if time.monotonic() < deadline:
                continue
            raise PackwiseError(
                f"cannot reach Kafka at {settings.bootstrap_servers} within {timeout_s:.0f}s "
                f"({error.args[0].str()}); start it with `packwise kafka start` or set PACKWISE_BOOTSTRAP_SERVERS"
            ) from None
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()}


@dataclass(frozen=True)
class CreateReport:
    created: list[str]
    existing: list[str]


def create_topics(settings: Settings, timeout_s: float = 30.0) -> CreateReport:
    """Create every missing topic; existing ones are left alone but must have the configured partitions."""
    admin = admin_client(settings)
    specs = topic_specs(settings)
    present = existing_partitions(admin, settings)
    missing = [spec for spec in specs if spec.name not in present]
    if missing:
        futures = admin.create_topics(
            [NewTopic(s.name, s.partitions, s.replication_factor, config=s.config()) for s in missing],
            operation_timeout=timeout_s, request_timeout=timeout_s,
        )
        for name, future in futures.items():
            try:
                future.result()
            except KafkaException as error:
                if error.args[0].name() != "TOPIC_ALREADY_EXISTS":  # another process raced us: fine
                    raise PackwiseError(f"could not create topic {name}: {error.args[0].str()}") from None
    _check_partitions(specs, _wait_visible(admin, settings, specs, timeout_s))
    return CreateReport([s.name for s in missing], [s.name for s in specs if s.name in present])


def _wait_visible(admin: AdminClient, settings: Settings, specs: list[TopicSpec], timeout_s: float) -> dict[str, int]:
    """Metadata reaches the brokers' caches a moment after CreateTopics returns; wait until every topic shows,
    so callers (and the partition check) see what was created."""
    deadline = time.monotonic() + timeout_s
    while True:
        present = existing_partitions(admin, settings)
        if all(spec.name in present for spec in specs) or time.monotonic() > deadline:
            return present
        time.sleep(0.2)


def verify_topics(settings: Settings, attempts: int = 1, timeout_s: float = 10.0) -> None:
    """Raise a PackwiseError naming every topic that is missing or has the wrong partition count; an
    unreachable cluster is retried `attempts` times before it is reported."""
    specs = topic_specs(settings)
    admin = admin_client(settings)
    for attempt in range(1, attempts + 1):
        try:
            present = existing_partitions(admin, settings, timeout_s)
            break
        except PackwiseError:
            if attempt == attempts:
                raise
            time.sleep(1.0)
    missing = [spec.name for spec in specs if spec.name not in present]
    if missing:
        raise PackwiseError(f"topics missing on {settings.bootstrap_servers}: {', '.join(missing)}; "
                            "create them with `packwise topics create`")
    _check_partitions(specs, present)


def _check_partitions(specs: list[TopicSpec], present: dict[str, int]) -> None:
    wrong = [f"{s.name} has {present[s.name]} (expected {s.partitions})"
             for s in specs if s.name in present and present[s.name] != s.partitions]
    if wrong:
        raise PackwiseError(
            "topic partition counts do not match PACKWISE_PARTITIONS, which breaks co-partitioning: "
            + "; ".join(wrong)
        )


def describe_configs(settings: Settings, names: list[str]) -> dict[str, dict[str, str]]:
    """The cleanup.policy and retention.ms in force on each named topic, read back from the brokers."""
    admin = admin_client(settings)
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, name) for name in names])
    return {
        resource.name: {key: entry.value for key, entry in future.result().items()
                        if key in ("cleanup.policy", "retention.ms")}
        for resource, future in futures.items()
    }


DEFAULT_MAX_MESSAGE_BYTES = 1_048_588  # Kafka's default message.max.bytes


def max_record_bytes(settings: Settings, timeout_s: float = 10.0) -> int:
    """The largest record every topic the worker writes accepts: the smallest max.message.bytes among the
    outputs, dead letters and changelogs, as the brokers report it (a topic inherits the broker's
    message.max.bytes unless it sets its own). The worker sizes its producer and checks what it writes
    against it."""
    written = [spec.name for spec in topic_specs(settings) if spec.role is not TopicRole.INPUT]
    admin = admin_client(settings)
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, name) for name in written],
                                     request_timeout=timeout_s)
    limits = []
    for resource, future in futures.items():
        try:
            entry = future.result().get("max.message.bytes")
        except KafkaException as error:
            raise PackwiseError(f"cannot read the configuration of topic {resource.name}: "
                                f"{error.args[0].str()}") from None
        limits.append(int(entry.value) if entry is not None and entry.value else DEFAULT_MAX_MESSAGE_BYTES)
    return min(limits, default=DEFAULT_MAX_MESSAGE_BYTES)
