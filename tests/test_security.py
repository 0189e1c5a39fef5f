"""Security: the settings and the clients they configure (unit), and a secured broker (SASL_SSL, SCRAM users per
role, ACLs) that the whole pipeline runs on, that refuses wrong credentials, untrusted certificates and the wrong
protocol in one line each, and that keeps every role to its own topics."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streams.broker import LocalBroker
from streams.cli import main
from streams.errors import PackwiseError
from streams.inspect import read_topic
from streams.secure_broker import ROLES, BrokerSecrets, grant_roles
from streams.security import faust_credentials, registry_config
from streams.serde import Serde
from streams.settings import MASK, Settings, reference_table
from streams.topics import TopicRole, client_config, create_topics, topic_specs
from streams.workers import settings_env
from tests.samples import SAMPLES

# --- settings and client configuration (no broker) ---


def test_security_settings_parse_and_reject_unknown_values() -> None:
    settings = Settings.from_env({"PACKWISE_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
                                  "PACKWISE_KAFKA_SASL_MECHANISM": "scram-sha-256"})
    assert (settings.kafka_security_protocol, settings.kafka_sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-256")
    assert Settings().kafka_security_protocol == "PLAINTEXT" and Settings().kafka_sasl_mechanism == "SCRAM-SHA-512"
    with pytest.raises(PackwiseError, match="PACKWISE_KAFKA_SECURITY_PROTOCOL='TLS' is not valid"):
        Settings.from_env({"PACKWISE_KAFKA_SECURITY_PROTOCOL": "TLS"})
    with pytest.raises(PackwiseError, match="PACKWISE_KAFKA_SASL_MECHANISM='GSSAPI' is not valid"):
        Settings.from_env({"PACKWISE_KAFKA_SASL_MECHANISM": "GSSAPI"})


def test_a_password_file_wins_and_an_unreadable_one_is_one_line(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-the-file\n")
    settings = Settings(kafka_password="from-the-env", kafka_password_file=str(secret))
    assert settings.kafka_secret() == "from-the-file"
    assert Settings(kafka_password="from-the-env").kafka_secret() == "from-the-env"
    with pytest.raises(PackwiseError, match="PACKWISE_KAFKA_PASSWORD_FILE=.*cannot be read"):
        Settings(kafka_password_file=str(tmp_path / "absent")).kafka_secret()


def test_config_masks_secrets_and_repr_leaves_them_out(capsys, monkeypatch) -> None:
    monkeypatch.setenv("PACKWISE_KAFKA_PASSWORD", "hunter2-kafka")
    monkeypatch.setenv("PACKWISE_SCHEMA_REGISTRY_USER_INFO", "svc:hunter2-registry")
    assert main(["config"]) == 0
    shown = capsys.readouterr().out
    assert "hunter2" not in shown and MASK in shown
    settings = Settings.from_env()
    assert "hunter2" not in repr(settings)
    assert dict((name, value) for name, value, _ in reference_table(settings))["PACKWISE_KAFKA_PASSWORD"] == MASK


def test_client_config_carries_tls_and_sasl(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    settings = Settings(kafka_security_protocol="SASL_SSL", kafka_username="worker",
                        kafka_password_file=str(secret), kafka_ca_file="/ca.pem", kafka_cert_file="/c.pem",
                        kafka_key_file="/k.pem")
    config = client_config(settings, **{"group.id": "g"})
    assert {k: config[k] for k in ("security.protocol", "sasl.mechanism", "sasl.username", "sasl.password",
                                    "ssl.ca.location", "ssl.certificate.location", "ssl.key.location", "group.id")} \
        == {"security.protocol": "sasl_ssl", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "worker",
            "sasl.password": "s3cret", "ssl.ca.location": "/ca.pem", "ssl.certificate.location": "/c.pem",
            "ssl.key.location": "/k.pem", "group.id": "g"}
    plain = client_config(Settings())
    assert plain["security.protocol"] == "plaintext" and not any(k.startswith(("sasl.", "ssl.")) for k in plain)
    # TLS files are not sent without TLS, SASL properties not without SASL
    assert "sasl.username" not in client_config(settings.replace(kafka_security_protocol="SSL"))
    assert "ssl.ca.location" not in client_config(settings.replace(kafka_security_protocol="SASL_PLAINTEXT"))


def test_faust_and_registry_get_the_same_credentials(tmp_path: Path) -> None:
    secrets = BrokerSecrets(tmp_path / "security")
    secrets.ensure()
    settings = secrets.client_settings(Settings(), "worker")
    credentials = faust_credentials(settings)
    assert (credentials.protocol.value, credentials.mechanism.value, credentials.username) == \
        ("SASL_SSL", "SCRAM-SHA-512", "worker")
    assert credentials.password == secrets.password("worker") and credentials.ssl_context.check_hostname
    assert faust_credentials(Settings()) is None
    assert registry_config(Settings(schema_registry_user_info="u:p", schema_registry_ca_file="/ca.pem")) == \
        {"basic.auth.user.info": "u:p", "ssl.ca.location": "/ca.pem"}
    assert registry_config(Settings()) == {}


def test_broker_secrets_are_private_files(tmp_path: Path) -> None:
    secrets = BrokerSecrets(tmp_path / "security")
    secrets.ensure()
    for path in [secrets.ca_file, secrets.keystore_file, *(secrets.password_file(role) for role in ROLES)]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(secrets.folder.stat().st_mode) == 0o700
    assert len({secrets.password(role) for role in ROLES}) == len(ROLES)


# --- the secured broker ---


@pytest.fixture
def secured(secure_broker: LocalBroker) -> tuple[LocalBroker, Settings, Settings]:
    """(broker, base settings with topics of their own, the same as admin); topics created, roles granted."""
    run = uuid.uuid4().hex[:8]
    base = Settings(bootstrap_servers=secure_broker.bootstrap, topic_prefix=f"s{run}.", app_id=f"pws-{run}",
                    partitions=3)
    admin = secure_broker.secrets.client_settings(base, "admin")
    create_topics(admin)
    grant_roles(admin, base)
    return secure_broker, base, admin


def packwise(settings: Settings, *args: str, timeout_s: float = 60.0) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True,
                            env={**os.environ, **settings_env(settings)}, timeout=timeout_s)
    return result, time.monotonic() - started


@pytest.mark.kafka
def test_refusals_are_one_line_and_fast(secured, tmp_path: Path) -> None:
    broker, base, _ = secured
    worker = broker.secrets.client_settings(base, "worker")
    other_ca = BrokerSecrets(tmp_path / "other")
    other_ca.ensure()
    cases = {
        "wrong password": (worker.replace(kafka_password="wrong", kafka_password_file=None),
                           [f"Kafka at {broker.bootstrap} refused user 'worker' with SASL SCRAM-SHA-512"]),
        "untrusted certificate": (worker.replace(kafka_ca_file=str(other_ca.ca_file)),
                                  [f"Kafka at {broker.bootstrap} presented a TLS certificate",
                                   str(other_ca.ca_file), "does not trust"]),
        "plaintext client": (base, [f"Kafka at {broker.bootstrap} closed the connection at the first request",
                                    "PACKWISE_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"]),
    }
    for case, (settings, expected) in cases.items():
        result, seconds = packwise(settings, "topics", "list")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (case, result.stderr)
        assert all(text in lines[0] for text in expected), (case, lines[0])
        assert seconds < 12, (case, seconds)  # the metadata wait is 15 s: refusals end it at once
        assert worker.kafka_secret() not in result.stderr + result.stdout
    result, _ = packwise(worker, "topics", "list")  # the right credentials see every topic the worker uses
    assert result.returncode == 0, result.stderr


def refused_writes(settings: Settings, topics: list[str], contract_of: dict[str, str]) -> dict[str, str]:
    """Produce one valid record to each topic as `settings`' principal: topic -> delivery error (or 'delivered')."""
    serde = Serde()
    outcome: dict[str, str] = {}
    producer = Producer(client_config(settings, **{"enable.idempotence": False, "message.timeout.ms": 10000,
                                                   "partitioner": "murmur2_random"}))
    for topic in topics:
        contract = contract_of[topic]
        value = serde.encode(contract, {**SAMPLES[contract], "event_id": str(uuid.uuid4())})
        producer.produce(topic, key=SAMPLES[contract]["product_id"].encode(), value=value,
                         on_delivery=lambda error, msg, t=topic: outcome.__setitem__(t, error.str() if error else
                                                                                     "delivered"))
    producer.flush(20)
    return outcome


@pytest.mark.kafka
@pytest.mark.slow
def test_pipeline_over_sasl_ssl_and_roles_keep_to_their_topics(secured, tmp_path: Path, trained_bundle: Path) -> None:
    from tests.harness import WorkerProcess, worker_settings
    from tests.test_worker import SMALL, assert_converges, count_mismatches
    from streams.simulator import run_simulation

    broker, base, admin = secured
    worker_env = broker.secrets.client_settings(base.replace(session_timeout_s=6.0, catalog_wait_s=5.0), "worker")
    worker = WorkerProcess(worker_settings(worker_env, tmp_path, "worker-0", trained_bundle), tmp_path / "w.log")
    try:
        worker.start()
        result = run_simulation(admin, SMALL)  # the simulated center plays every producing role
        assert_converges(admin, result)

        specs = topic_specs(base)
        contract_of = {s.name: s.contract for s in specs}
        inputs = [s.name for s in specs if s.role is TopicRole.INPUT]
        shipments = base.topic_prefix + "shipments"
        conveyor = refused_writes(broker.secrets.client_settings(base, "conveyor"), [shipments], contract_of)
        assert "Topic authorization failed" in conveyor[shipments] and "\n" not in conveyor[shipments]
        ops = refused_writes(broker.secrets.client_settings(base, "ops"), inputs, contract_of)
        assert all("authorization failed" in error.lower() for error in ops.values()), ops
        assert set(ops) == set(inputs)
        time.sleep(3.0)  # a flush interval and more: anything that got through would show now
        assert count_mismatches(admin, result) == []
        for spec in specs:
            if spec.role is TopicRole.DEAD_LETTER:
                assert read_topic(admin, spec.name, "dead_letter", timeout_s=10) == [], spec.name
        log = worker.log_path.read_text()
        assert worker_env.kafka_secret() not in log and broker.secrets.password("admin") not in log

        # ops watch the decisions over SASL_SSL with their own role
        from streams.workers import settings_env

        ops_env = {**os.environ, **settings_env(broker.secrets.client_settings(base, "ops"))}
        view = subprocess.run([sys.executable, "-m", "streams.cli", "watch", "--once"], env=ops_env,
                              capture_output=True, text=True, timeout=120)
        assert view.returncode == 0, view.stderr
        assert view.stdout.startswith(f"{len(result.products)} products decided"), view.stdout[:300]
    finally:
        worker.stop()
        assert worker.gone()


def test_the_lab_writes_test_results_only_and_the_worker_reads_them() -> None:
    from confluent_kafka.admin import AclOperation, ResourceType

    from streams.secure_broker import role_acls

    settings = Settings(topic_prefix="t.")
    topics = {(b.principal, b.name, b.operation) for b in role_acls(settings) if b.restype == ResourceType.TOPIC}
    assert {name for principal, name, operation in topics
            if principal == "User:lab" and operation == AclOperation.WRITE} == {"t.test-results"}
    assert not any(principal == "User:lab" and operation == AclOperation.READ for principal, _, operation in topics)
    assert ("User:worker", "t.test-results", AclOperation.READ) in topics
    assert ("User:worker", "t.test-results.dlq", AclOperation.WRITE) in topics
