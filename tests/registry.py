"""A small, strict Schema Registry for tests: it answers as Confluent's does and enforces compatibility.

It serves the REST calls packwise and confluent-kafka's client make, with Confluent's status codes and
error codes:

    POST /subjects/{subject}/versions   register: 200 {"id"}; 409 (error 409) incompatible; 422 (42201) not Avro
    POST /subjects/{subject}            look up: 200 {"subject","id","version","schema"}; 404 (40401 subject,
                                        40403 schema not found)
    GET  /schemas/ids/{id}              200 {"schema"}; 404 (40403)
    GET  /subjects                      the subjects
    GET  /subjects/{subject}/versions   the version numbers; 404 (40401)
    GET  /subjects/{subject}/versions/{n|latest}
    GET|PUT /config[/{subject}]         {"compatibilityLevel"} / {"compatibility"}; default BACKWARD, as Confluent's

Ids are global: the same schema (by Avro parsing canonical form) has one id under every subject, as in
Confluent's registry. Compatibility is judged by Avro's schema resolution rules, written here independently
of the product's code, so a product bug cannot make its own test pass. Every request is recorded
(`requests`), so a test can say which calls a process made.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import fastavro
from fastavro.schema import to_parsing_canonical_form

LEVELS = ("NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE")
PROMOTIONS = {"int": {"long", "float", "double"}, "long": {"float", "double"}, "float": {"double"},
              "string": {"bytes"}, "bytes": {"string"}}
PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def _named(schema: Any, namespace: str, names: dict[str, dict]) -> Any:
    """Collect every named type by full name, so references by name can be followed."""
    if isinstance(schema, list):
        for branch in schema:
            _named(branch, namespace, names)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed"):
            name = schema["name"]
            space = schema.get("namespace", namespace)
            full = name if "." in name else f"{space}.{name}" if space else name
            names[full] = {**schema, "_full": full, "_ns": full.rpartition(".")[0]}
            for field in schema.get("fields", []):
                _named(field["type"], names[full]["_ns"], names)
        elif kind in ("array", "map"):
            _named(schema.get("items", schema.get("values")), namespace, names)
        elif isinstance(kind, (dict, list)):
            _named(kind, namespace, names)
    return names


def _resolve(schema: Any, names: dict[str, dict], namespace: str = "") -> Any:
    """A schema with references by name followed and primitive wrappers ({"type": "long", ...}) unwrapped."""
    if isinstance(schema, str):
        if schema in PRIMITIVES:
            return schema
        return names.get(schema) or names.get(f"{namespace}.{schema}") or schema
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed"):
            full = schema["name"] if "." in schema["name"] else f"{schema.get('namespace', namespace)}.{schema['name']}"
            return names.get(full, schema)
        if kind in ("array", "map"):
            return schema
        return _resolve(kind, names, namespace)
    return schema


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, str):
        return schema
    return schema["type"]


def can_read(reader: Any, writer: Any, rnames: dict, wnames: dict, rns: str = "", wns: str = "") -> bool:
    """Whether data written with `writer` resolves to `reader` (Avro specification, schema resolution)."""
    reader, writer = _resolve(reader, rnames, rns), _resolve(writer, wnames, wns)
    rk, wk = _kind(reader), _kind(writer)
    if wk == "union":
        return all(can_read(reader, branch, rnames, wnames, rns, wns) for branch in writer)
    if rk == "union":
        return any(can_read(branch, writer, rnames, wnames, rns, wns) for branch in reader)
    if rk in PRIMITIVES or wk in PRIMITIVES:
        return rk == wk or rk in PROMOTIONS.get(wk, ())
    if rk != wk:
        return False
    if rk == "array":
        return can_read(reader["items"], writer["items"], rnames, wnames, rns, wns)
    if rk == "map":
        return can_read(reader["values"], writer["values"], rnames, wnames, rns, wns)
    if reader["_full"] != writer["_full"]:
        return False
    if rk == "fixed":
        return reader["size"] == writer["size"]
    if rk == "enum":
        return set(writer["symbols"]) <= set(reader["symbols"]) or "default" in reader
    written = {f["name"]: f for f in writer["fields"]}
    for field in reader["fields"]:
        if field["name"] in written:
            if not can_read(field["type"], written[field["name"]]["type"], rnames, wnames, reader["_ns"], writer["_ns"]):
                return False
        elif "default" not in field:
            return False
    return True


def compatible(new: dict, old: dict, direction: str) -> bool:
    """BACKWARD: the new schema reads data written with the old; FORWARD: the old reads the new."""
    new_names, old_names = _named(new, "", {}), _named(old, "", {})
    if direction == "BACKWARD":
        return can_read(new, old, new_names, old_names)
    return can_read(old, new, old_names, new_names)


class StrictRegistry:
    def __init__(self) -> None:
        self.schemas: list[str] = []  # id - 1 -> schema string
        self.ids: dict[str, int] = {}  # canonical form -> id
        self.subjects: dict[str, list[int]] = {}  # subject -> ids of versions 1..n
        self.config: dict[str, str] = {}
        self.default_level = "BACKWARD"
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- the registry's logic, callable directly by tests too --------------------------------------------

    def level(self, subject: str) -> str:
        return self.config.get(subject, self.default_level)

    def register(self, subject: str, schema_str: str) -> tuple[int, dict]:
        try:
            schema = json.loads(schema_str)
            canonical = to_parsing_canonical_form(fastavro.parse_schema(json.loads(schema_str), _write_hint=False))
        except Exception as error:  # noqa: BLE001 - any parse failure is the client's
            return 422, {"error_code": 42201, "message": f"Invalid schema: {error}"}
        versions = self.subjects.get(subject, [])
        known = self.ids.get(canonical)
        if known is not None and known in versions:
            return 200, {"id": known}
        level = self.level(subject)
        checked = versions if level.endswith("TRANSITIVE") else versions[-1:]
        directions = {"BACKWARD": ["BACKWARD"], "FORWARD": ["FORWARD"], "FULL": ["BACKWARD", "FORWARD"]}.get(
            level.replace("_TRANSITIVE", ""), [])
        for old_id in checked:
            old = json.loads(self.schemas[old_id - 1])
            for direction in directions:
                if not compatible(schema, old, direction):
                    return 409, {"error_code": 409, "message": (
                        f"Schema being registered is incompatible with an earlier schema for subject \"{subject}\" "
                        f"({level}: version {versions.index(old_id) + 1} cannot be read {direction.lower()})")}
        if known is None:
            self.schemas.append(schema_str)
            known = self.ids[canonical] = len(self.schemas)
        self.subjects.setdefault(subject, []).append(known)
        return 200, {"id": known}

    def lookup(self, subject: str, schema_str: str) -> tuple[int, dict]:
        if subject not in self.subjects:
            return 404, {"error_code": 40401, "message": f"Subject '{subject}' not found."}
        try:
            canonical = to_parsing_canonical_form(fastavro.parse_schema(json.loads(schema_str), _write_hint=False))
        except Exception as error:  # noqa: BLE001
            return 422, {"error_code": 42201, "message": f"Invalid schema: {error}"}
        schema_id = self.ids.get(canonical)
        if schema_id is None or schema_id not in self.subjects[subject]:
            return 404, {"error_code": 40403, "message": "Schema not found"}
        return 200, {"subject": subject, "id": schema_id, "version": self.subjects[subject].index(schema_id) + 1,
                     "schema": self.schemas[schema_id - 1]}

    def handle(self, method: str, path: str, body: dict | None) -> tuple[int, Any]:
        parts = [unquote(p) for p in path.strip("/").split("/") if p]
        with self.lock:
            self.requests.append((method, "/" + "/".join(parts)))
            if parts[:2] == ["schemas", "ids"] and len(parts) == 3 and method == "GET":
                schema_id = int(parts[2])
                if 1 <= schema_id <= len(self.schemas):
                    return 200, {"schema": self.schemas[schema_id - 1]}
                return 404, {"error_code": 40403, "message": "Schema not found"}
            if parts == ["subjects"] and method == "GET":
                return 200, sorted(self.subjects)
            if parts[:1] == ["subjects"] and len(parts) == 3 and parts[2] == "versions" and method == "POST":
                if (body or {}).get("schemaType", "AVRO") != "AVRO":
                    return 422, {"error_code": 42201, "message": "only AVRO schemas here"}
                return self.register(parts[1], body["schema"])
            if parts[:1] == ["subjects"] and len(parts) == 2 and method == "POST":
                return self.lookup(parts[1], body["schema"])
            if parts[:1] == ["subjects"] and len(parts) >= 3 and parts[2] == "versions" and method == "GET":
                versions = self.subjects.get(parts[1])
                if versions is None:
                    return 404, {"error_code": 40401, "message": f"Subject '{parts[1]}' not found."}
                if len(parts) == 3:
                    return 200, list(range(1, len(versions) + 1))
                number = len(versions) if parts[3] == "latest" else int(parts[3])
                if not 1 <= number <= len(versions):
                    return 404, {"error_code": 40402, "message": "Version not found."}
                schema_id = versions[number - 1]
                return 200, {"subject": parts[1], "id": schema_id, "version": number,
                             "schema": self.schemas[schema_id - 1]}
            if parts[:1] == ["config"]:
                subject = parts[1] if len(parts) > 1 else None
                if method == "PUT":
                    level = (body or {}).get("compatibility", "")
                    if level not in LEVELS:
                        return 422, {"error_code": 42203, "message": f"Invalid compatibility level {level}"}
                    if subject is None:
                        self.default_level = level
                    else:
                        self.config[subject] = level
                    return 200, {"compatibility": level}
                if subject is not None and subject not in self.config:
                    return 404, {"error_code": 40408, "message": f"Subject '{subject}' has no compatibility set"}
                return 200, {"compatibilityLevel": self.config.get(subject, self.default_level)}
            return 404, {"error_code": 404, "message": f"no route for {method} {path}"}

    def writes(self) -> list[tuple[str, str]]:
        """The requests that changed something: registrations and configuration."""
        return [(m, p) for m, p in self.requests
                if (m == "POST" and re.fullmatch(r"/subjects/[^/]+/versions", p)) or m in ("PUT", "DELETE")]

    # -- HTTP ------------------------------------------------------------------------------------------

    def start(self) -> str:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                status, payload = registry.handle(method, urlsplit(self.path).path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's names
                self._answer("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._answer("POST")

            def do_PUT(self) -> None:  # noqa: N802
                self._answer("PUT")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="strict-registry", daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
