"""Event serialization: the Confluent wire format around Avro bodies, in one place.

Wire format: byte 0 is the magic byte 0, bytes 1-4 the schema id (big-endian unsigned), then the Avro
body written by fastavro without a container header. Schema ids come from a Schema Registry when a URL is
configured, or, the embedded default, from the schemas shipped in `schemas/` with ids derived from each
schema's canonical form (so every process that ships the same schemas agrees on the ids with no server).

Past versions of a contract live in `schemas/history/<contract>/*.avsc`; they are registered too, so data
written before a schema change stays readable, resolved to the current version by Avro's rules.
"""

from __future__ import annotations

import ast
import copy
import functools
import hashlib
import io
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol

import fastavro
import fastavro.validation
from fastavro.schema import to_parsing_canonical_form

MAGIC_BYTE = 0
HEADER = struct.Struct(">bI")

# Contracts by name: the file schemas/<name>.avsc holds the record; the topic layer maps topics to these.
CONTRACTS = (
    "tunnel_capture",
    "catalog_update",
    "shipment",
    "damage_report",
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
    schema_id: int
    schema: dict[str, Any]  # standalone JSON schema, shared types inlined
    parsed: Any  # fastavro's parsed form

    @property
    def full_name(self) -> str:
        return f"{self.schema['namespace']}.{self.schema['name']}"


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

    def id_for(self, contract: str, schema: dict[str, Any]) -> int: ...

    def schema_for(self, schema_id: int) -> dict[str, Any] | None: ...


class EmbeddedIds:
    """Ids from the schemas themselves; knows no schema beyond those it was given."""

    def id_for(self, contract: str, schema: dict[str, Any]) -> int:
        return embedded_schema_id(schema)

    def schema_for(self, schema_id: int) -> dict[str, Any] | None:
        return None


class RegistryIds:
    """Ids from a Confluent-compatible Schema Registry (subjects `<contract>-value`, topic-independent so
    a contract's id is the same on its input topic and its dead-letter copy)."""

    def __init__(self, url: str) -> None:
        self._client = _registry_client(url)

    def id_for(self, contract: str, schema: dict[str, Any]) -> int:
        from confluent_kafka.schema_registry import Schema

        return self._client.register_schema(f"{contract}-value", Schema(json.dumps(schema), "AVRO"))

    def schema_for(self, schema_id: int) -> dict[str, Any] | None:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            return json.loads(self._client.get_schema(schema_id).schema_str)
        except SchemaRegistryError:
            return None


@functools.lru_cache(maxsize=None)
def _registry_client(url: str) -> Any:
    """One client per URL and process: it caches ids, and confluent-kafka's mock:// registry keeps its
    schemas per client instance, so sharing the client is what lets two Serdes meet in tests."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient.new_client({"url": url})


class Serde:
    """Encodes records of a contract to wire bytes and decodes wire bytes to records of a contract.

    Decoding resolves the writer's schema (found by id) to the reader's current version, so old and new
    producers can share a topic while a schema evolves.
    """

    def __init__(self, schemas_dir: Path = DEFAULT_SCHEMAS_DIR, registry_url: str | None = None) -> None:
        self._ids: SchemaIds = RegistryIds(registry_url) if registry_url else EmbeddedIds()
        self._current: dict[str, Contract] = {}
        self._by_id: dict[int, Contract] = {}
        for name, versions in load_schema_files(schemas_dir).items():
            for schema in versions:
                contract = self._register(name, schema)
            self._current[name] = contract  # the last one is the current version

    def _register(self, name: str, schema: dict[str, Any]) -> Contract:
        try:
            parsed = fastavro.parse_schema(copy.deepcopy(schema))  # hinted: fastavro skips re-parsing per call
        except Exception as error:  # fastavro raises several types for a bad schema
            raise SerdeError(f"schema of contract '{name}' is not valid Avro: {error}") from None
        contract = Contract(name, self._ids.id_for(name, schema), schema, parsed)
        self._by_id[contract.schema_id] = contract
        return contract

    def contract(self, name: str) -> Contract:
        try:
            return self._current[name]
        except KeyError:
            raise SerdeError(f"unknown contract '{name}'; known: {', '.join(CONTRACTS)}") from None

    def encode(self, contract_name: str, record: Mapping[str, Any], validate: bool = True) -> bytes:
        """Wire bytes of `record` under the current version of the contract; invalid values are a
        SerdeError naming the field. validate=False skips the full check for records a worker builds
        itself (a wrong type still fails in the writer, and is then described the same way)."""
        contract = self.contract(contract_name)
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
        writer = self._writer(schema_id, contract_name)
        if writer.schema.get("name") != reader.schema.get("name"):
            raise SerdeError(
                f"{contract_name} message was written with schema id {schema_id} of '{writer.full_name}', "
                f"not a version of '{reader.full_name}'"
            )
        stream = io.BytesIO(data)
        stream.seek(HEADER.size)
        try:
            # Same version on both sides (the usual case): no schema resolution, about twice as fast.
            resolve_to = None if writer is reader else reader.parsed
            record = fastavro.schemaless_reader(stream, writer.parsed, resolve_to)
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

    def _writer(self, schema_id: int, contract_name: str) -> Contract:
        contract = self._by_id.get(schema_id)
        if contract is None:
            schema = self._ids.schema_for(schema_id)
            if schema is not None:
                contract = self._register(contract_name, schema)
        if contract is None:
            raise SerdeError(
                f"{contract_name} message has unknown schema id {schema_id}: not in the shipped schemas "
                "nor the configured registry"
            )
        return contract


def _describe_validation(error: "fastavro.validation.ValidationError") -> str:
    """fastavro's ValidationError is a JSON list of 'path is <value> of type <t> expected <schema>'
    lines that quote the whole expected schema; say the first one in words."""
    try:
        problems = json.loads(str(error))
        first = str(problems[0]) if isinstance(problems, list) and problems else str(error)
    except json.JSONDecodeError:
        first = str(error)
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
