"""The secured local broker (`packwise kafka start --secure`): its TLS material, its SCRAM users and the
ACLs of each role, all kept in the broker's state folder.

Layout of STATE/kafka/security/ (files 0600, folder 0700):
  ca.pem             the CA that signed the broker's certificate: clients' PACKWISE_KAFKA_CA_FILE
  ca.key             its key (to sign more certificates; never needed by clients)
  broker.pem         the broker's key and certificate (Kafka reads PEM key stores), for 127.0.0.1/localhost
  passwords/ROLE     one generated password per role: a client's PACKWISE_KAFKA_PASSWORD_FILE
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import time
from pathlib import Path

from streams.settings import Settings

ADMIN = "admin"
# Who may do what (role_acls below): each role a SCRAM-SHA-512 user of the local broker.
ROLES = {
    "worker": "reads the inputs in its consumer group, writes the outputs, the dead letters and its changelogs",
    "conveyor": "writes tunnel-captures only",
    "catalog": "writes catalog-updates only",
    "shipping": "writes shipments only",
    "returns": "writes damage-reports only",
    "lab": "writes test-results only",
    "ops": "reads the outputs and the dead letters (which hold customers' words)",
    ADMIN: "everything (super user): creates topics and ACLs, runs the simulator",
}
MECHANISM = "SCRAM-SHA-512"
BROKER_PRINCIPAL = "CN=localhost"  # the subject of broker.pem, as Kafka names a TLS principal


def _private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read (the umask could allow more)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.chmod(path, 0o600)


class BrokerSecrets:
    """The TLS material and role passwords of one local broker, made once and kept."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def keystore_file(self) -> Path:
        return self.folder / "broker.pem"

    def password_file(self, role: str) -> Path:
        return self.folder / "passwords" / role

    def password(self, role: str) -> str:
        return self.password_file(role).read_text().strip()

    def ensure(self) -> None:
        """Make whatever is missing: the folder, the CA and broker certificate, one password per role."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "passwords").mkdir(exist_ok=True)
        os.chmod(self.folder, 0o700)
        os.chmod(self.folder / "passwords", 0o700)
        if not (self.ca_file.exists() and self.keystore_file.exists()):
            self._issue_certificates()
        for role in ROLES:
            if not self.password_file(role).exists():
                _private(self.password_file(role), (secrets.token_urlsafe(24) + "\n").encode())

    def _issue_certificates(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        now = datetime.datetime.now(datetime.timezone.utc)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "packwise local broker CA")])
        ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
                   .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=825))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                content_commitment=False, key_encipherment=False,
                                                data_encipherment=False, key_agreement=False,
                                                encipher_only=False, decipher_only=False), critical=True)
                   .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=825))
                .add_extension(x509.SubjectAlternativeName([
                    x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        pem = serialization.Encoding.PEM
        pkcs8 = dict(encoding=pem, format=serialization.PrivateFormat.PKCS8,
                     encryption_algorithm=serialization.NoEncryption())
        _private(self.folder / "ca.key", ca_key.private_bytes(**pkcs8))
        _private(self.ca_file, ca_cert.public_bytes(pem))
        # Kafka's PEM key store: the unencrypted PKCS#8 key, then the chain
        _private(self.keystore_file, key.private_bytes(**pkcs8) + cert.public_bytes(pem) + ca_cert.public_bytes(pem))

    def scram_arguments(self) -> list[str]:
        """StorageTool format arguments that create every role's SCRAM user with the storage."""
        args = []
        for role in ROLES:
            args += ["--add-scram", f"{MECHANISM}=[name={role},password={self.password(role)}]"]
        return args

    def client_settings(self, settings: Settings, role: str) -> Settings:
        """`settings` as the role talks to this broker: SASL_SSL, SCRAM-SHA-512, its password file, the CA."""
        return settings.replace(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism=MECHANISM,
                                kafka_username=role, kafka_password="",
                                kafka_password_file=str(self.password_file(role)), kafka_ca_file=str(self.ca_file))


def server_properties(secrets_: BrokerSecrets, port: int, controller_port: int) -> list[str]:
    """The listener and authorizer lines of a secured broker. Clients and the broker's own inter-broker
    connection use SASL_SSL (the broker as admin). The controller listener, internal to this one process,
    takes TLS with a client certificate: only the holder of broker.pem (the broker itself, as
    User:CN=localhost) can talk to it, where PLAINTEXT would make any local program an anonymous super user."""
    admin_password = secrets_.password(ADMIN)
    return [
        f"listeners=SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners=SASL_SSL://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=SASL_SSL",
        "listener.security.protocol.map=CONTROLLER:SSL,SASL_SSL:SASL_SSL",
        f"sasl.enabled.mechanisms={MECHANISM}",
        f"sasl.mechanism.inter.broker.protocol={MECHANISM}",
        f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config="
        f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN}" '
        f'password="{admin_password}";',
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={secrets_.keystore_file}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={secrets_.ca_file}",
        "ssl.client.auth=none",
        "listener.name.controller.ssl.client.auth=required",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        f"super.users=User:{ADMIN};User:{BROKER_PRINCIPAL}",
        "allow.everyone.if.no.acl.found=false",
    ]


def role_acls(settings: Settings) -> list:
    """The ACL bindings of every role for the topics of `settings` (prefix and app id)."""
    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, ResourcePatternType,
                                       ResourceType)

    from streams.topics import TopicRole, topic_specs

    specs = topic_specs(settings)
    by_role = {role: [s.name for s in specs if s.role is role] for role in TopicRole}
    by_contract = {s.contract: s.name for s in specs if s.role is TopicRole.INPUT}
    literal, prefixed = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
    bindings = []

    def allow(role: str, resource: ResourceType, name: str, pattern: ResourcePatternType, *operations) -> None:
        for operation in operations:
            bindings.append(AclBinding(resource, name, pattern, f"User:{role}", "*", operation,
                                       AclPermissionType.ALLOW))

    read, write, describe = AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE
    for name in by_role[TopicRole.INPUT]:
        allow("worker", ResourceType.TOPIC, name, literal, read, describe)
    for name in by_role[TopicRole.OUTPUT] + by_role[TopicRole.DEAD_LETTER]:
        allow("worker", ResourceType.TOPIC, name, literal, write, describe, AclOperation.DESCRIBE_CONFIGS)
        allow("ops", ResourceType.TOPIC, name, literal, read, describe)
    # its changelogs and Faust's own topics ({app_id}-__assignor-__leader), which Faust creates at start
    allow("worker", ResourceType.TOPIC, f"{settings.app_id}-", prefixed, read, write, describe,
          AclOperation.CREATE, AclOperation.DESCRIBE_CONFIGS)
    allow("worker", ResourceType.GROUP, settings.app_id, prefixed, read, describe)  # its group and -restore
    allow("ops", ResourceType.GROUP, "packwise-", prefixed, read, describe)  # watch and inspect readers
    for role, contract in (("conveyor", "tunnel_capture"), ("catalog", "catalog_update"),
                           ("shipping", "shipment"), ("returns", "damage_report"), ("lab", "test_result")):
        allow(role, ResourceType.TOPIC, by_contract[contract], literal, write, describe)
    return bindings


def grant_roles(admin_settings: Settings, settings: Settings, timeout_s: float = 30.0) -> int:
    """Create every role's ACLs for the topics of `settings`, as admin; safe to repeat. Returns their count."""
    from confluent_kafka import KafkaException

    from streams.errors import PackwiseError
    from streams.topics import admin_client

    from confluent_kafka.admin import (AclBindingFilter, AclOperation, AclPermissionType, ResourcePatternType,
                                       ResourceType)

    bindings = role_acls(settings)
    admin = admin_client(admin_settings)
    for binding, future in admin.create_acls(bindings, request_timeout=timeout_s).items():
        try:
            future.result()
        except KafkaException as error:
            raise PackwiseError(f"could not create the ACL {binding}: {error.args[0].str()}") from None
    # created means committed to the metadata log; the authorizer applies them a moment later
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                                  AclPermissionType.ANY)
    deadline = time.monotonic() + timeout_s
    while not set(bindings) <= set(admin.describe_acls(everything, request_timeout=timeout_s).result()):
        if time.monotonic() > deadline:
            raise PackwiseError(f"the ACLs created on {admin_settings.bootstrap_servers} did not take effect "
                                f"within {timeout_s:.0f}s")
        time.sleep(0.2)
    return len(bindings)
