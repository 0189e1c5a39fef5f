"""`packwise topics create`: idempotent, with the configured partitions and cleanup policies."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import NewTopic

from streams.errors import PackwiseError
from streams.settings import Settings
from streams.topics import (
    TopicRole, admin_client, create_topics, describe_configs, existing_partitions, topic_specs, verify_topics,
)

pytestmark = pytest.mark.kafka


def test_create_twice_is_safe_and_reads_back_as_configured(kafka_settings: Settings) -> None:
    specs = topic_specs(kafka_settings)
    first = create_topics(kafka_settings)
    second = create_topics(kafka_settings)
    assert sorted(first.created) == sorted(s.name for s in specs) and first.existing == []
    assert second.created == [] and sorted(second.existing) == sorted(s.name for s in specs)

    metadata = admin_client(kafka_settings).list_topics(timeout=10)
    configs = describe_configs(kafka_settings, [s.name for s in specs])
    for spec in specs:
        assert len(metadata.topics[spec.name].partitions) == kafka_settings.partitions
        assert configs[spec.name]["cleanup.policy"] == spec.cleanup_policy
        assert configs[spec.name]["retention.ms"] == str(spec.retention_ms)
    verify_topics(kafka_settings)


def test_every_input_has_a_dead_letter_topic(kafka_settings: Settings) -> None:
    specs = topic_specs(kafka_settings)
    inputs = {s.name for s in specs if s.role is TopicRole.INPUT}
    dead_letters = {s.name for s in specs if s.role is TopicRole.DEAD_LETTER}
    assert dead_letters == {name + ".dlq" for name in inputs}
    assert {s.name: s.cleanup_policy for s in specs}[kafka_settings.topic_prefix + "catalog-updates"] == "compact"
    by_name = {s.name: s for s in specs}
    results, shipments = (by_name[kafka_settings.topic_prefix + base] for base in ("test-results", "shipments"))
    assert results.role is TopicRole.INPUT and results.contract == "test_result"
    assert (results.cleanup_policy, results.retention_ms) == (shipments.cleanup_policy, shipments.retention_ms)


def test_missing_topics_are_named(kafka_settings: Settings) -> None:
    with pytest.raises(PackwiseError, match="topics missing on .*shipments.*packwise topics create"):
        verify_topics(kafka_settings)


def test_mismatched_partition_count_is_refused(kafka_settings: Settings) -> None:
    shipments = kafka_settings.topic_prefix + "shipments"
    admin = admin_client(kafka_settings)  # keep the client alive until the future resolves
    admin.create_topics([NewTopic(shipments, 1, 1)])[shipments].result()
    with pytest.raises(PackwiseError, match=f"{shipments} has 1 \\(expected 3\\)"):
        create_topics(kafka_settings)


def test_unreachable_broker_is_one_clear_error() -> None:
    settings = Settings(bootstrap_servers="127.0.0.1:1")
    with pytest.raises(PackwiseError, match="cannot reach Kafka at 127.0.0.1:1 within 2s"):
        existing_partitions(admin_client(settings), settings, timeout_s=2)


def test_topics_create_registers_the_contracts_when_a_registry_is_configured(kafka_settings: Settings,
                                                                              strict_registry) -> None:
    import os
    import subprocess
    import sys

    from streams.serde import COMPATIBILITY
    from streams.topics import contract_subjects

    env = {**os.environ, "PACKWISE_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
           "PACKWISE_TOPIC_PREFIX": kafka_settings.topic_prefix, "PACKWISE_APP_ID": kafka_settings.app_id,
           "PACKWISE_PARTITIONS": str(kafka_settings.partitions), "PACKWISE_SCHEMA_REGISTRY_URL": strict_registry.url}
    result = subprocess.run([sys.executable, "-m", "streams.cli", "topics", "create"], capture_output=True,
                            text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert f"compatibility {COMPATIBILITY}" in result.stdout
    subjects = sorted(s for names in contract_subjects(kafka_settings).values() for s in names)
    assert sorted(strict_registry.subjects) == subjects
