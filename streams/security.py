"""How every packwise client authenticates, in one room: the settings (streams/settings.py) turned into
librdkafka properties, Faust credentials and Schema Registry configuration, and librdkafka's connection
errors turned into one sentence an operator can act on.

A password is read here, at client creation, and passed to the client only: never logged, never in a repr.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

from streams.errors import PackwiseError
from streams.settings import Settings


def librdkafka_security(settings: Settings) -> dict[str, str]:
    """The security properties of a confluent-kafka producer, consumer or AdminClient."""
    config = {"security.protocol": settings.kafka_security_protocol.lower()}
    if settings.uses_sasl:
        config.update({"sasl.mechanism": settings.kafka_sasl_mechanism, "sasl.username": settings.kafka_username,
                       "sasl.password": settings.kafka_secret()})
    if settings.uses_tls:
        for key, path in (("ssl.ca.location", settings.kafka_ca_file),
                          ("ssl.certificate.location", settings.kafka_cert_file),
                          ("ssl.key.location", settings.kafka_key_file)):
            if path:
                config[key] = path
    return config


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """A verifying TLS context (hostname included) for aiokafka: the CA file or the system's CAs, and the
    client certificate for mutual TLS when one is set."""
    context = ssl.create_default_context(cafile=settings.kafka_ca_file or None)
    if settings.kafka_cert_file:
        context.load_cert_chain(settings.kafka_cert_file, settings.kafka_key_file or None)
    return context


def faust_credentials(settings: Settings) -> Any:
    """faust.App(broker_credentials=...): None for PLAINTEXT."""
    import faust

    if settings.uses_sasl:
        return faust.SASLCredentials(username=settings.kafka_username, password=settings.kafka_secret(),
                                     mechanism=settings.kafka_sasl_mechanism,
                                     ssl_context=ssl_context(settings) if settings.uses_tls else None)
    if settings.uses_tls:
        return faust.SSLCredentials(ssl_context(settings))
    return None


def registry_config(settings: Settings) -> dict[str, str]:
    """confluent-kafka SchemaRegistryClient configuration beyond the URL: basic auth and the CA bundle."""
    config = {}
    user_info = settings.registry_user_info()
    if user_info:
        config["basic.auth.user.info"] = user_info
    if settings.schema_registry_ca_file:
        config["ssl.ca.location"] = settings.schema_registry_ca_file
    return config


class ConnectionErrors:
    """librdkafka's error_cb: remembers the first error that retrying cannot cure (credentials refused, a
    certificate not trusted, the wrong protocol for the listener), so a caller can stop waiting at once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.fatal: str | None = None

    def __call__(self, error: Any) -> None:
        if self.fatal is None:
            self.fatal = explain(self.settings, error.str())

    def logger(self) -> logging.Logger:
        """A logger for librdkafka's `logger` property: its lines come here (served by poll), never to stderr.
        A wrong protocol for the listener shows only in a log line, never in the error callback."""
        logger = logging.getLogger(f"packwise.librdkafka.{id(self)}")
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        logger.handlers = [_Collector(self)]
        return logger

    def raise_if_fatal(self) -> None:
        if self.fatal:
            raise PackwiseError(self.fatal)


class _Collector(logging.Handler):
    def __init__(self, errors: ConnectionErrors) -> None:
        super().__init__(logging.DEBUG)  # librdkafka logs a disconnect at the first request below LOG_ERR
        self.errors = errors

    def emit(self, record: logging.LogRecord) -> None:
        if self.errors.fatal is None:
            self.errors.fatal = explain(self.errors.settings, record.getMessage())


def explain(settings: Settings, reason: str) -> str | None:
    """One sentence for a connection error that will not go away by itself; None for the others."""
    where = f"Kafka at {settings.bootstrap_servers}"
    lowered = reason.lower()
    if "authentication failed" in lowered or "invalid credentials" in lowered or "sasl authentication" in lowered:
        return (f"{where} refused user '{settings.kafka_username}' with SASL {settings.kafka_sasl_mechanism}: the "
                "user name or password is wrong (PACKWISE_KAFKA_USERNAME, PACKWISE_KAFKA_PASSWORD_FILE)")
    if "unsupported sasl mechanism" in lowered:
        return (f"{where} does not accept SASL {settings.kafka_sasl_mechanism}: set PACKWISE_KAFKA_SASL_MECHANISM to "
                "one the listener enables")
    if "certificate verify failed" in lowered or "certificate_verify_failed" in lowered:
        ca = settings.kafka_ca_file or "the system's CA store"
        return (f"{where} presented a TLS certificate that {ca} does not trust (certificate verify failed): set "
                "PACKWISE_KAFKA_CA_FILE to the CA that signed the brokers' certificates")
    if "ssl handshake failed" in lowered:
        return (f"{where} and this client disagree on TLS (PACKWISE_KAFKA_SECURITY_PROTOCOL="
                f"{settings.kafka_security_protocol}): {_detail(reason)}")
    if "connecting to a ssl listener" in lowered or "disconnected while requesting apiversion" in lowered \
            or ("connection closed by peer" in lowered and "state apiversion_query" in lowered):
        return (f"{where} closed the connection at the first request: its listener expects another security "
                f"protocol than PACKWISE_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} (TLS or SASL?)")
    return None


def _detail(reason: str) -> str:
    """librdkafka's reason without its 'host:port/id: ' prefix and its repetition count."""
    text = reason.split(": ", 1)[1] if reason.count(": ") and "/" in reason.split(": ", 1)[0] else reason
    return text.split(" (after ")[0].strip()
