"""One typed settings object, read from PACKWISE_* environment variables; every knob documented once here.

`packwise config` prints the table below with the values in force; the README's configuration reference
is generated from the same declarations.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Callable, Mapping

from streams.errors import PackwiseError

ENV_PREFIX = "PACKWISE_"


def _setting(default: Any, doc: str, parse: Callable[[str], Any] = str, accepted: str = "",
             secret: bool = False) -> Any:
    """A secret is never shown: `packwise config` masks it and the settings' repr leaves it out."""
    return field(default=default, repr=not secret,
                 metadata={"doc": doc, "parse": parse, "accepted": accepted, "secret": secret})


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError
    return value


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError
    return value in ("true", "1", "yes")


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise ValueError
    return value


def _fetch_pace_ms(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 500:  # past the 500 ms a fetch may wait at the broker, pacing only adds latency
        raise ValueError
    return value


def _dirty_bytes(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 256 << 20:  # the write-back buffer's memory bound too: a flood of captures stops here
        raise ValueError
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError
    return value


def _seconds_ahead(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1e9:  # about 31 years; bounded so that the worker's clock plus it is still a datetime
        raise ValueError
    return value


def _iso_date(text: str) -> date:
    return date.fromisoformat(text)  # ValueError for anything but YYYY-MM-DD (and its ISO variants)


def _store(text: str) -> str:
    if text not in ("rocksdb", "memory"):
        raise ValueError
    return text


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(text: str) -> str:
    value = text.upper()
    if value not in LOG_LEVELS:
        raise ValueError
    return value


def _log_format(text: str) -> str:
    if text not in ("auto", "json", "console"):
        raise ValueError
    return text


def _failpoint(text: str) -> str:
    from streams.failpoints import POINTS

    name, _, count = text.partition(":")
    if text and (name not in POINTS or (count and int(count) < 1)):
        raise ValueError
    return text


def _optional(text: str) -> str | None:
    return text or None


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


def _security_protocol(text: str) -> str:
    value = text.upper()
    if value not in SECURITY_PROTOCOLS:
        raise ValueError
    return value


def _sasl_mechanism(text: str) -> str:
    value = text.upper()
    if value not in SASL_MECHANISMS:
        raise ValueError
    return value


def _default_state_dir() -> str:
    return str(Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "packwise")


@dataclass(frozen=True)
class Settings:
    """Everything a packwise process can be told from its environment."""

    bootstrap_servers: str = _setting(
        "", "Kafka bootstrap servers, comma-separated host:port; empty means the local broker "
        "(127.0.0.1:PACKWISE_KAFKA_PORT).")
    schema_registry_url: str | None = _setting(
        None, "Schema Registry URL; empty means the embedded default (ids from the shipped schemas).",
        _optional, "a URL or empty")
    kafka_security_protocol: str = _setting(
        "PLAINTEXT", "How clients talk to Kafka: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (TLS with a "
        "user and password).", _security_protocol, "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    kafka_sasl_mechanism: str = _setting(
        "SCRAM-SHA-512", "SASL mechanism with SASL_PLAINTEXT or SASL_SSL: SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN.",
        _sasl_mechanism, "SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN")
    kafka_username: str = _setting("", "SASL user name of this process (a role: worker, conveyor, ops, ...).")
    kafka_password: str = _setting(
        "", "SASL password; prefer PACKWISE_KAFKA_PASSWORD_FILE, which wins when both are set. Never shown.",
        secret=True)
    kafka_password_file: str | None = _setting(
        None, "File holding the SASL password (a mounted secret); read at start, trailing newline ignored.",
        _optional, "a path or empty")
    kafka_ca_file: str | None = _setting(
        None, "PEM bundle of the CAs that sign the brokers' certificates (SSL, SASL_SSL); empty: the system's.",
        _optional, "a path or empty")
    kafka_cert_file: str | None = _setting(
        None, "PEM client certificate for mutual TLS (with PACKWISE_KAFKA_KEY_FILE); empty: none.",
        _optional, "a path or empty")
    kafka_key_file: str | None = _setting(
        None, "PEM private key of PACKWISE_KAFKA_CERT_FILE (unencrypted; mount it as a secret).",
        _optional, "a path or empty")
    schema_registry_user_info: str = _setting(
        "", "Schema Registry basic-auth credentials, USER:PASSWORD; prefer the file below. Never shown.",
        secret=True)
    schema_registry_user_info_file: str | None = _setting(
        None, "File holding the Schema Registry's USER:PASSWORD; wins over PACKWISE_SCHEMA_REGISTRY_USER_INFO.",
        _optional, "a path or empty")
    schema_registry_ca_file: str | None = _setting(
        None, "PEM bundle of the CAs that sign the Schema Registry's certificate (https); empty: the system's.",
        _optional, "a path or empty")
    state_dir: str = _setting(
        _default_state_dir(), "Folder for the local broker's data, log and pid, and worker state.")
    kafka_port: int = _setting(9092, "Port of the local broker's client listener on 127.0.0.1.", _port, "1-65535")
    kafka_controller_port: int = _setting(
        9093, "Port of the local broker's KRaft controller listener on 127.0.0.1.", _port, "1-65535")
    kafka_heap: str = _setting("512m", "Java heap of the local broker (-Xmx).")
    partitions: int = _setting(
        6, "Partitions of every input topic (all inputs are co-partitioned) and of the outputs.",
        _positive_int, "an integer >= 1")
    replication_factor: int = _setting(1, "Replication factor of created topics.", _positive_int, "an integer >= 1")
    topic_prefix: str = _setting("", "Prefix of every topic name, e.g. 'staging.' to share a cluster.")
    app_id: str = _setting(
        "packwise", "Faust application id: the consumer group and the prefix of table changelog topics.")
    model_path: str = _setting(
        "", "Model bundle directory the worker loads (`packwise train --out DIR` writes one).")
    store: str = _setting(
        "rocksdb", "Table storage: rocksdb (on disk under the state folder, fast restarts) or memory.",
        _store, "rocksdb or memory")
    worker_name: str = _setting(
        "worker-0", "Name of this worker: its own data folder under the state folder; unique per worker "
        "(a StatefulSet pod name).")
    web_port: int = _setting(6066, "Port of the worker's web server (health, /metrics) on its web host.", _port,
                             "1-65535")
    web_host: str = _setting("127.0.0.1", "Address the worker's web server binds to.")
    session_timeout_s: float = _setting(
        30.0, "Consumer group session timeout in seconds: how long a worker that died silently keeps its "
        "partitions before the group gives them to the others.", _positive_float, "a number > 0")
    batch_size: int = _setting(64, "Most captures scored in one model batch.", _positive_int, "an integer >= 1")
    stats_batch_size: int = _setting(
        500, "Most shipments and damage reports applied in one batch (each product read once per batch).",
        _positive_int, "an integer >= 1")
    faust_metrics: bool = _setting(
        False, "Also export Faust's per-message Prometheus metrics (streams, tables, commits, sends) on /metrics; "
        "they cost CPU on every message (a tenth of the statistics path's CPU in a profile).", _flag, "true or false")
    state_cache_size: int = _setting(
        200_000, "Table values each worker keeps decoded in memory (0: none): a read cache in front of RocksDB, "
        "emptied whenever partitions move.", _non_negative_int, "an integer >= 0")
    state_flush_interval_s: float = _setting(
        2.0, "Seconds between state flushes: each changed product is written to its changelog once per flush, "
        "and a consumer commits only offsets whose effects a flush has made durable. Longer: fewer records, "
        "more events replayed after a crash.", _positive_float, "a number > 0")
    state_max_dirty: int = _setting(
        50_000, "Changed products (all tables together) that wait for the next flush at most; reaching it flushes "
        "at once.", _positive_int, "an integer >= 1")
    state_max_dirty_bytes: int = _setting(
        1 << 20, "Bytes of captures and catalog records (as received) that wait for the next flush at most; reaching "
        "it flushes at once. Small keeps each flush short, so the captures that arrive meanwhile do not wait behind "
        "it (at 300 captures/s, two seconds of captures were 10 MB to send and to write to RocksDB). It also bounds the "
        "memory those records hold until then, hence its ceiling of 256 MiB.", _dirty_bytes,
        "an integer from 1 to 268435456 (256 MiB)")
    scoring_threads: int = _setting(
        0, "Threads torch uses in the worker's scoring process; 0: one per core but one, which is left to the "
        "worker's event loop (decoding, tables, publishing run there while a batch is scored).", _non_negative_int,
        "an integer >= 0")
    wait_for_model: bool = _setting(
        False, "Join the consumer group only once the scoring process has loaded the model. Default: join at once, "
        "so a restarted worker recovers and applies shipments and reports while torch loads (its first capture "
        "waits for the model); true suits scale-out, where the partitions a new worker takes keep being scored by "
        "their old owner until it can score them.", _flag, "true or false")
    batch_within_s: float = _setting(
        0.01, "Longest wait to fill a scoring batch, in seconds; bounds the latency batching adds.",
        _positive_float, "a number > 0")
    fetch_pace_ms: float = _setting(
        10.0, "Milliseconds between the worker's fetches from a broker while messages keep coming: a fetch goes no "
        "sooner than this after the last one that brought messages was sent, so a busy topic's messages come in "
        "fewer, fuller fetches (each asks for every partition the worker owns, and costs the worker and the broker "
        "CPU). A quiet topic's next message is fetched as soon as it arrives. 0: fetch again at once, as Kafka's "
        "clients do.", _fetch_pace_ms, "a number from 0 to 500")
    catalog_wait_s: float = _setting(
        30.0, "How long a capture waits for its product's catalog record before it is scored on images only.",
        _positive_float, "a number > 0")
    default_marketplace: str = _setting(
        "NA", "Marketplace applied to a product whose catalog record has not arrived yet.")
    event_time_earliest: date = _setting(
        date(2000, 1, 1), "Earliest plausible event time (UTC date): an input event stamped before it goes to its "
        "dead-letter topic as event_time.", _iso_date, "a date YYYY-MM-DD")
    event_time_max_ahead_s: float = _setting(
        86400.0, "How far ahead of the worker's clock an event time may be, in seconds (producers' clocks drift); "
        "an input event stamped later goes to its dead-letter topic as event_time.", _seconds_ahead,
        "a number from 0 to 1e9")
    marketplaces_file: str | None = _setting(
        None, "JSON file overriding per-marketplace targets and packaging weights (see streams/marketplaces.py).",
        _optional, "a path or empty")
    failpoint: str = _setting(
        "", "For crash tests only: a point where the worker kills itself, NAME or NAME:N (the Nth time); "
        "see streams/failpoints.py. Empty: none.", _failpoint,
        "empty, or stats.applied, flush.sending or flush.sent, optionally with :N")
    console_host: str = _setting(
        "127.0.0.1", "Address `packwise console` binds to; any other than 127.0.0.1, ::1 or localhost needs a "
        "console token.")
    console_port: int = _setting(8087, "Port of `packwise console`.", _port, "1-65535")
    console_token: str = _setting(
        "", "Token the console asks for (bearer header, basic-auth password or its sign-in form); prefer "
        "PACKWISE_CONSOLE_TOKEN_FILE. Required off loopback. Never shown.", secret=True)
    console_token_file: str | None = _setting(
        None, "File holding the console token; wins over PACKWISE_CONSOLE_TOKEN.", _optional, "a path or empty")
    console_metrics_urls: str = _setting(
        "", "Comma-separated /metrics URLs of the workers the console shows; empty: the local worker's "
        "(http://127.0.0.1:PACKWISE_WEB_PORT/metrics).")
    log_level: str = _setting("INFO", "Log level: DEBUG, INFO, WARNING, ERROR or CRITICAL.", _log_level,
                              "DEBUG, INFO, WARNING, ERROR or CRITICAL (any case)")
    log_format: str = _setting(
        "auto", "Log format: json, console, or auto (console on a terminal, JSON otherwise).",
        _log_format, "auto, json or console")

    def __post_init__(self) -> None:
        if not self.bootstrap_servers:
            object.__setattr__(self, "bootstrap_servers", f"127.0.0.1:{self.kafka_port}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Settings from the environment; a bad value is a PackwiseError naming the variable."""
        environ = os.environ if environ is None else environ
        values = {}
        for setting in dataclasses.fields(cls):
            name = env_name(setting.name)
            if name not in environ:
                continue
            raw = environ[name].strip()
            try:
                values[setting.name] = setting.metadata["parse"](raw)
            except ValueError:
                accepted = setting.metadata["accepted"] or "a valid value"
                raise PackwiseError(f"{name}={raw!r} is not valid: expected {accepted}") from None
        return cls(**values)

    @property
    def worker_dir(self) -> Path:
        """This worker's own data folder (tables in RocksDB); never shared between workers."""
        return Path(self.state_dir) / "workers" / self.app_id / self.worker_name

    @property
    def uses_sasl(self) -> bool:
        return self.kafka_security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    def kafka_secret(self) -> str:
        """The SASL password: the file's content when PACKWISE_KAFKA_PASSWORD_FILE is set, else the variable."""
        return _secret(self.kafka_password_file, "PACKWISE_KAFKA_PASSWORD_FILE", self.kafka_password)

    def registry_user_info(self) -> str:
        """USER:PASSWORD for the Schema Registry, or "" for none; the file wins over the variable."""
        return _secret(self.schema_registry_user_info_file, "PACKWISE_SCHEMA_REGISTRY_USER_INFO_FILE",
                       self.schema_registry_user_info)

    def console_token_secret(self) -> str:
        """The console's token: the file's content when PACKWISE_CONSOLE_TOKEN_FILE is set, else the variable."""
        return _secret(self.console_token_file, "PACKWISE_CONSOLE_TOKEN_FILE", self.console_token)

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)


def _secret(path: str | None, variable: str, value: str) -> str:
    if not path:
        return value
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as error:
        raise PackwiseError(f"{variable}={path} cannot be read ({error.strerror}): mount the secret there or "
                            "fix the path") from None


MASK = "********"


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def reference_table(settings: Settings | None = None) -> list[tuple[str, str, str]]:
    """(variable, value, meaning) for every setting: the defaults, or the values in `settings`; a secret that
    is set shows as a mask, never its value."""
    settings = settings or Settings()

    def shown(f: dataclasses.Field) -> str:
        value = getattr(settings, f.name)
        if value is None or value == "":
            return ""
        return MASK if f.metadata["secret"] else str(value)

    return [(env_name(f.name), shown(f), f.metadata["doc"]) for f in dataclasses.fields(Settings)]
