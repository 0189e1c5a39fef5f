"""Event serialization: the Confluent wire format around Avro bodies, in one place.

Wire format: byte 0 is the magic byte 0, bytes 1-4 the schema id (big-endian unsigned), then the Avro
body written by fastavro without a container header. Schema ids come from a Schema Registry when a URL is
configured, or, the embedded default, from the schemas shipped in `schemas/` with ids derived from each
schema's canonical form (so every process that ships the same schemas agrees on the ids with no server).

Past versions of a contract live in `schemas/history/<contract>/*.avsc`, so data written before a schema
change stays readable, resolved to the current version by Avro's rules.

A registry is shared with other teams, so packwise only reads it while it runs: ids are looked up, writer
schemas fetched by id, and a message written with a schema that is not a readable version of its topic's
contract is a WrongContract error (dead-lettered as `wrong_contract`). Registering is a deploy step,
`packwise schemas register` (register_contracts): every version, oldest first, under each topic's subject
(SUBJECT_NAMING), with the subject's compatibility set to COMPATIBILITY.
"""

from __future__ import annotations

import ast
import copy
import functools
import hashlib
import io
import json
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import fastavro
import fastavro.validation
from fastavro.read import SchemaResolutionError
from fastavro.schema import to_parsing_canonical_form

from streams.errors import PackwiseError

MAGIC_BYTE = 0
HEADER = struct.Struct(">bI")

# Contracts by name: the file schemas/<name>.avsc holds the record; the topic layer maps topics to these.
CONTRACTS = (
    "tunnel_capture",
    "catalog_update",
    "shipment",
    "damage_report",
    "test_result",
    "pack_type_decision",
    "relabel_trigger",
    "test_request",
    "dead_letter",
)
# Named types defined in their own file and referenced by full name from the contracts.
SHARED_TYPES = ("pack_type",)

DEFAULT_SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"


class SerdeError(ValueError):
    """A message could not be encoded or decoded; the message says why in one sentence."""


@dataclass(frozen=True)
class Contract:
    """One version of an event contract: its standalone schema and the id it travels under."""

    name: str
    schema_id: int | None  # None: not registered in the configured registry (it cannot be written)
    schema: dict[str, Any]  # standalone JSON schema, shared types inlined
    parsed: Any  # fastavro's parsed form

    @property
    def full_name(self) -> str:
        name = self.schema["name"]
        return name if "." in name or not self.schema.get("namespace") else f"{self.schema['namespace']}.{name}"


def _inline_named_types(node: Any, shared: Mapping[str, dict], defined: set[str]) -> Any:
    """Return `node` with every reference to a shared named type replaced by its definition at the first
    use (Avro allows one definition per name), so each contract stands alone for a registry."""
    if isinstance(node, str):
        if node in shared and node not in defined:
            defined.add(node)
            return copy.deepcopy(shared[node])
        return node
    if isinstance(node, list):
        return [_inline_named_types(item, shared, defined) for item in node]
    if isinstance(node, dict):
        if node.get("type") in ("record", "enum", "fixed"):
            name = node["name"] if "." in node["name"] else f"{node.get('namespace', '')}.{node['name']}"
            defined.add(name)
        return {key: _inline_named_types(value, shared, defined) for key, value in node.items()}
    return node


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise SerdeError(f"cannot read schema file {path}: {error}") from None


def load_schema_files(schemas_dir: Path = DEFAULT_SCHEMAS_DIR) -> dict[str, list[dict[str, Any]]]:
    """Every contract's standalone schemas from `schemas_dir`: current version last, history before it."""
    shared = {}
    for name in SHARED_TYPES:
        schema = _read_json(schemas_dir / f"{name}.avsc")
        shared[f"{schema['namespace']}.{schema['name']}"] = schema
    versions: dict[str, list[dict[str, Any]]] = {}
    for name in CONTRACTS:
        path = schemas_dir / f"{name}.avsc"
        if not path.exists():
            raise SerdeError(f"schema file {path} is missing; every contract in CONTRACTS needs one")
        history = sorted((schemas_dir / "history" / name).glob("*.avsc"))
        versions[name] = [_inline_named_types(_read_json(p), shared, set()) for p in [*history, path]]
    return versions


def embedded_schema_id(schema: dict[str, Any]) -> int:
    """Deterministic id of a schema: 31 bits of the SHA-256 of its Avro parsing canonical form."""
    canonical = to_parsing_canonical_form(fastavro.parse_schema(schema))
    return int.from_bytes(hashlib.sha256(canonical.encode()).digest()[:4], "big") & 0x7FFFFFFF


class SchemaIds(Protocol):
    """Where schema ids come from: the embedded default or a Schema Registry."""

    def id_for(self, contract: str, schema: dict[str, Any]) -> int | None: ...

    def schema_for(self, schema_id: int) -> dict[str, Any] | str | None: ...


class EmbeddedIds:
    """Ids from the schemas themselves; knows no schema beyond those it was given."""

    def id_for(self, contract: str, schema: dict[str, Any]) -> int | None:
        return embedded_schema_id(schema)

    def schema_for(self, schema_id: int) -> dict[str, Any] | str | None:
        return None


# How packwise names its subjects and what it asks the registry to keep (README, "Schema Registry"):
# TopicNameStrategy, Confluent's default, so the registry checks any producer of a topic against the
# topic's contract before it writes. FULL_TRANSITIVE: every new version reads all data written before (a
# topic's history stays readable when its readers upgrade) and every older version reads the new one's data
# (a worker not yet upgraded keeps reading what an upgraded producer writes, and so do the ops consumers of
# the outputs). Adding or removing a field with a default is allowed; anything else is refused.
SUBJECT_NAMING = "TopicNameStrategy"
COMPATIBILITY = "FULL_TRANSITIVE"


def subject_name(topic: str) -> str:
    """The subject of a topic's values under TopicNameStrategy."""
    return f"{topic}-value"


class RegistryUnavailable(PackwiseError):
    """The Schema Registry did not answer, or answered with an error that is not about the schema asked for:
    nothing can be said about the message, so it is not dead-lettered (the worker stops and is restarted)."""

    exit_code = 70


class RegistryIds:
    """Ids from a Confluent-compatible Schema Registry, read only: a contract's id is looked up under the
    subject of a topic that carries it, and a writer schema is fetched by id. Nothing is registered here
    (`packwise schemas register` does that, once, as a deploy step)."""

    def __init__(self, url: str, subjects: Mapping[str, str], settings: Any = None) -> None:
        self.url = url
        self.subjects = subjects
        self._client = _registry_client(url, settings)

    def id_for(self, contract: str, schema: dict[str, Any]) -> int | None:
        from confluent_kafka.schema_registry import Schema

        subject = self.subjects.get(contract)
        if subject is None:
            return None
        try:
            return self._client.lookup_schema(subject, Schema(json.dumps(schema), "AVRO")).schema_id
        except Exception as error:  # noqa: BLE001 - the client raises its own error and httpx's
            if _status(error) == 404:
                return None
            raise self.unavailable(error) from None

    def schema_for(self, schema_id: int) -> dict[str, Any] | str | None:
        """The schema registered under `schema_id` (a dict), None if there is none, or a sentence saying why
        it cannot be an Avro record schema."""
        try:
            registered = self._client.get_schema(schema_id)
        except Exception as error:  # noqa: BLE001
            if _status(error) == 404:
                return None
            raise self.unavailable(error) from None
        if (registered.schema_type or "AVRO") != "AVRO":
            return f"schema id {schema_id} is a {registered.schema_type} schema, not Avro"
        try:
            schema = json.loads(registered.schema_str)
        except json.JSONDecodeError:
            return f"schema id {schema_id} is not JSON"
        return schema

    def unavailable(self, error: Exception) -> RegistryUnavailable:
        return RegistryUnavailable(f"the Schema Registry at {self.url} did not answer as expected: "
                                   f"{type(error).__name__}: {str(error).strip() or 'no detail'}")


def _status(error: Exception) -> int | None:
    return getattr(error, "http_status_code", None)


def _registry_client(url: str, settings: Any = None) -> Any:
    """The registry client for `url`, with the basic auth and CA bundle of `settings` (streams/security.py)."""
    from streams.security import registry_config

    return _cached_registry_client(url, tuple(sorted(registry_config(settings).items())) if settings else ())


@functools.lru_cache(maxsize=None)
def _cached_registry_client(url: str, config: tuple[tuple[str, str], ...]) -> Any:
    """One client per URL (and credentials) and process: it caches ids, and confluent-kafka's mock:// registry
    keeps its schemas per client instance, so sharing the client is what lets two Serdes meet in tests."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient.new_client({"url": url, **dict(config)})


@dataclass(frozen=True)
class Registration:
    subject: str
    contract: str
    versions: int  # versions of the contract shipped (history and current), all registered
    schema_id: int  # the current version's id


def register_contracts(url: str, subjects: Mapping[str, Sequence[str]],
                       schemas_dir: Path = DEFAULT_SCHEMAS_DIR, settings: Any = None) -> list[Registration]:
    """Register every version of every contract (oldest first) under each subject that carries it, after
    setting the subject's compatibility to COMPATIBILITY; safe to repeat (a registered schema keeps its id).
    A refusal is a PackwiseError naming the contract, the subject and the registry's reason."""
    from confluent_kafka.schema_registry import Schema

    client = _registry_client(url, settings)
    done = []
    for contract, versions in load_schema_files(schemas_dir).items():
        for subject in subjects.get(contract, ()):
            try:
                client.set_compatibility(subject, COMPATIBILITY)
                for schema in versions:
                    schema_id = client.register_schema(subject, Schema(json.dumps(schema), "AVRO"))
            except Exception as error:  # noqa: BLE001 - the client raises its own error and httpx's
                if _status(error) is None or _status(error) >= 500:
                    raise RegistryIds(url, {}).unavailable(error) from None
                detail = getattr(error, "error_message", None) or str(error)
                raise PackwiseError(f"the Schema Registry at {url} refused contract '{contract}' "
                                    f"(schemas/{contract}.avsc) under subject '{subject}' ({COMPATIBILITY}): "
                                    f"{detail}") from None
            done.append(Registration(subject, contract, len(versions), schema_id))
    return done


class WrongContract(SerdeError):
    """A message written with a schema that is not a readable version of the topic's contract."""


# Schema ids the registry does not know, or whose schema is not a version of the contract asked for, are
# remembered this long, so a stream of such messages costs one registry call, not one each.
REJECTED_ID_TTL_S = 60.0
REJECTED_IDS_KEPT = 10_000


class Serde:
    """Encodes records of a contract to wire bytes and decodes wire bytes to records of a contract.

    Decoding resolves the writer's schema (found by id) to the reader's current version, so old and new
    producers can share a topic while a schema evolves. With a registry, ids are only ever looked up: a
    writer schema the process does not ship is fetched by id, and one that is not a readable version of the
    contract is a WrongContract error (the worker dead-letters the message), never registered.
    """

    def __init__(self, schemas_dir: Path = DEFAULT_SCHEMAS_DIR, registry_url: str | None = None,
                 subjects: Mapping[str, str] | None = None, settings: Any = None) -> None:
        """`subjects`: with a registry, the subject each contract's id is looked up under (Serde.for_settings
        derives them from the topics); `settings`: the registry's credentials and CA, if any."""
        self.registry_url = registry_url
        self._ids: SchemaIds = (RegistryIds(registry_url, subjects or {}, settings) if registry_url
                                else EmbeddedIds())
        self._current: dict[str, Contract] = {}
        self._by_id: dict[int, Contract] = {}
        self._rejected: dict[int, tuple[Any, float]] = {}  # schema id -> (what the registry said, until)
        for name, versions in load_schema_files(schemas_dir).items():
            # with a registry, only the current version is looked up: older ones are fetched by id if read
            for schema in versions if not registry_url else versions[-1:]:
                contract = self._parse(name, schema, self._ids.id_for(name, schema))
                if contract.schema_id is not None:
                    self._by_id[contract.schema_id] = contract
            self._current[name] = contract  # the last one is the current version

    @classmethod
    def for_settings(cls, settings: Any, schemas_dir: Path = DEFAULT_SCHEMAS_DIR) -> "Serde":
        """The Serde of a packwise process: embedded ids, or the registry's under the topics' subjects."""
        if not settings.schema_registry_url:
            return cls(schemas_dir)
        from streams.topics import contract_subjects

        subjects = {contract: names[0] for contract, names in contract_subjects(settings).items()}
        return cls(schemas_dir, settings.schema_registry_url, subjects, settings)

    @staticmethod
    def _parse(name: str, schema: dict[str, Any], schema_id: int | None) -> Contract:
        try:
            parsed = fastavro.parse_schema(copy.deepcopy(schema))  # hinted: fastavro skips re-parsing per call
        except Exception as error:  # fastavro raises several types for a bad schema
            raise SerdeError(f"schema of contract '{name}' is not valid Avro: {error}") from None
        return Contract(name, schema_id, schema, parsed)

    def contract(self, name: str) -> Contract:
        try:
            return self._current[name]
        except KeyError:
            raise SerdeError(f"unknown contract '{name}'; known: {', '.join(CONTRACTS)}") from None

    def unregistered(self, names: Sequence[str]) -> list[str]:
        """Those of the contracts `names` whose current version has no id (not registered in the registry)."""
        return [name for name in names if self.contract(name).schema_id is None]

    def require_registered(self, names: Sequence[str], role: str) -> None:
        """A PackwiseError naming the deploy step when a contract this process writes is not registered."""
        missing = self.unregistered(names)
        if missing:
            raise PackwiseError(
                f"the Schema Registry at {self.registry_url} has no current version of the contract(s) "
                f"{', '.join(missing)} that {role} writes: run `packwise schemas register` (a deploy step; "
                "`packwise topics create` runs it too) with the same PACKWISE_TOPIC_PREFIX")

    def encode(self, contract_name: str, record: Mapping[str, Any], validate: bool = True) -> bytes:
        """Wire bytes of `record` under the current version of the contract; invalid values are a
        SerdeError naming the field. validate=False skips the full check for records a worker builds
        itself (a wrong type still fails in the writer, and is then described the same way)."""
        contract = self.contract(contract_name)
        if contract.schema_id is None:
            raise SerdeError(f"contract '{contract_name}' is not registered in the Schema Registry at "
                             f"{self.registry_url}: run `packwise schemas register`")
        if validate:
            self._validate(contract, record)
        body = io.BytesIO()
        body.write(HEADER.pack(MAGIC_BYTE, contract.schema_id))
        try:
            fastavro.schemaless_writer(body, contract.parsed, record)
        except Exception:  # fastavro's writer raises many types; the validator says which field and why
            self._validate(contract, record)
            raise
        return body.getvalue()

    @staticmethod
    def _validate(contract: Contract, record: Mapping[str, Any]) -> None:
        try:
            fastavro.validation.validate(record, contract.parsed, raise_errors=True)
        except fastavro.validation.ValidationError as error:
            raise SerdeError(f"{contract.name} record is invalid: {_describe_validation(error)}") from None

    def decode(self, contract_name: str, data: bytes | None) -> dict[str, Any]:
        """The record in `data`, read as the current version of `contract_name`."""
        reader = self.contract(contract_name)
        if not data:
            raise SerdeError(f"{contract_name} message has an empty value (expected Confluent wire format)")
        if data[0] != MAGIC_BYTE:
            raise SerdeError(
                f"{contract_name} message has wrong magic byte {data[0]:#04x} (expected 0x00, Confluent wire format)"
            )
        if len(data) < HEADER.size:
            raise SerdeError(
                f"{contract_name} message is truncated: {len(data)} bytes, shorter than the 5-byte header"
            )
        _, schema_id = HEADER.unpack_from(data)
        writer = self._writer(schema_id, reader)
        stream = io.BytesIO(data)
        stream.seek(HEADER.size)
        try:
            # Same version on both sides (the usual case): no schema resolution, about twice as fast.
            resolve_to = None if writer is reader else reader.parsed
            record = fastavro.schemaless_reader(stream, writer.parsed, resolve_to)
        except OverflowError as error:  # fastavro's only overflow: a timestamp outside what a datetime holds
            raise SerdeError(f"event_time: {contract_name} message has a timestamp no date can hold (schema id "
                             f"{schema_id}: {error})") from None
        except SchemaResolutionError as error:
            raise WrongContract(
                f"wrong_contract: {contract_name} message was written with schema id {schema_id}, a version of "
                f"'{writer.full_name}' that does not resolve to the current one ({error})") from None
        except Exception as error:  # fastavro reports short or corrupt bodies through many exception types
            raise SerdeError(
                f"{contract_name} message body is truncated or corrupt: it does not decode as schema id "
                f"{schema_id} ({type(error).__name__}: {error})"
            ) from None
        if stream.tell() != len(data):
            raise SerdeError(
                f"{contract_name} message has {len(data) - stream.tell()} bytes after the Avro body "
                f"(schema id {schema_id}): corrupt or written with another schema"
            )
        return record

    def _writer(self, schema_id: int, reader: Contract) -> Contract:
        """The contract version `schema_id` stands for, if it is a version of `reader`'s record."""
        contract = self._by_id.get(schema_id)
        if contract is None:
            contract = self._fetch(schema_id, reader)
        if contract.full_name != reader.full_name:
            raise WrongContract(
                f"wrong_contract: {reader.name} message was written with schema id {schema_id} of "
                f"'{contract.full_name}', not a version of '{reader.full_name}'")
        return contract

    def _fetch(self, schema_id: int, reader: Contract) -> Contract:
        """A writer schema this process does not ship, from the registry (by id only: never registered). What
        the registry said of an id that cannot be used is remembered, so a stream of them costs one call."""
        remembered = self._rejected.get(schema_id)
        if remembered is not None and remembered[1] > time.monotonic():
            schema = remembered[0]
        else:
            schema = self._ids.schema_for(schema_id)
        contract: Contract | None = None
        if schema is None:
            error: SerdeError = SerdeError(f"{reader.name} message has unknown schema id {schema_id}: not in the "
                                           "shipped schemas nor the configured registry")
        elif isinstance(schema, str) or not isinstance(schema, dict) or schema.get("type") != "record":
            what = schema if isinstance(schema, str) else f"schema id {schema_id} is not an Avro record"
            error = WrongContract(f"wrong_contract: {reader.name} message was written with {what}, not a version "
                                  f"of '{reader.full_name}'")
        else:
            try:
                contract = self._parse(reader.name, schema, schema_id)
            except SerdeError as parse_error:
                error = WrongContract(f"wrong_contract: {reader.name} message was written with schema id "
                                      f"{schema_id}: {parse_error}")
        if contract is None:
            if len(self._rejected) >= REJECTED_IDS_KEPT:
                self._rejected.clear()
            self._rejected[schema_id] = (schema, time.monotonic() + REJECTED_ID_TTL_S)
            raise error
        self._by_id[schema_id] = contract
        return contract


# Fields that hold a customer's own words: an error names their type, never their value (README, "Personal data").
FREE_TEXT_FIELDS = ("DamageReport.comment",)


def _describe_validation(error: "fastavro.validation.ValidationError") -> str:
    """fastavro's ValidationError is a JSON list of 'path is <value> of type <t> expected <schema>'
    lines that quote the whole expected schema; say the first one in words."""
    try:
        problems = json.loads(str(error))
        first = str(problems[0]) if isinstance(problems, list) and problems else str(error)
    except json.JSONDecodeError:
        first = str(error)
    path, _, rest = first.partition(" is ")
    if path.endswith(FREE_TEXT_FIELDS):  # '<path> is <value> of type <t> expected ...': drop the value
        first = f"{path} is a value of type {rest.rpartition(' of type ')[2]}"
    found, _, expected = first.partition(" expected ")
    try:
        schema = ast.literal_eval(expected)
    except (ValueError, SyntaxError):
        return first
    if isinstance(schema, dict) and "symbols" in schema:
        wanted = "one of " + ", ".join(schema["symbols"])
    elif isinstance(schema, dict):
        wanted = str(schema.get("logicalType") or schema.get("type"))
    elif isinstance(schema, list):
        wanted = " or ".join(s if isinstance(s, str) else str(s.get("type")) for s in schema)
    else:
        wanted = str(schema)
    return f"{found}, expected {wanted}"
