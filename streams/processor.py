"""What happens to the events of one batch, with no Kafka in it: decode, validate, update the per-product
state, ask the policy, and say what to publish. The Faust agents in streams/app.py only move batches in
and messages out; tests drive this class with plain dicts as tables.

State, all keyed by product id (so co-partitioned with the inputs, DESIGN.md invariant 1):
- catalog:      the latest catalog record, as its wire bytes
- captures:     the latest tunnel capture, as its wire bytes (re-scoring after a catalog change needs it)
- pending:      products with a capture waiting for their catalog record -> since (epoch seconds), partition
- products:     one record per product, written at most once per state flush whatever changed in it (the
                peers' one record per changed key per commit): marketplace, item size, the model's last verdict (or
                that it was sought and none came) as "model": {"p": calibrated probabilities per type, "ok":
                {calibration target: "0111", a digit per type, 1 where certified}, "version"} (workers before
                per-target certification kept "ok" as one list of booleans, made at their bundle's single target),
                the current decision (whether it is provisional, and how its type was chosen), its open test request
                under "request": {"n": requests made so far, and while one is open "type", "from" (the decision it
                was asked under), "g" (grams a pass saves), "at" (when asked, epoch ms)}, and its evidence under
                "stats": shipments and damages per package type, the latest physical test outcome per package type
                since the product last changed materially, and the event ids already applied with a digest of each,
                which tells an exact resend (dropped) from another event under the same id (dead-lettered). Workers
                before the request lifecycle kept instead "tests", the types they ever requested; such a product's
                requests are closed at its next decision.
- damage_stats: read only, for products whose evidence an older worker kept in this table of its own (it took a
                second changelog record per changed product); the first event a product gets moves its evidence
                into its products record, and the worker never writes this table again
"""

from __future__ import annotations

import copy
import enum
import functools
import hashlib
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Callable, Mapping, MutableMapping

from models.packtypes import PACK_TYPES, PackType
from streams import metrics
from streams.logs import get_logger
from streams.marketplaces import Marketplace
from streams.policy import (ChosenBy, Counts, Decision, ModelView, Relabel, TestOutcome, decide, relabel,
                            withdrawal_reason)
from streams.serde import Serde, SerdeError
from streams.settings import Settings
from streams.topics import DEAD_LETTER_SUFFIX
from streams.validation import EventTimes, ValidationError, validate

log = get_logger("packwise.processor")

# How many applied event ids each product remembers, to drop an event a producer sent twice (its copies
# are adjacent in the partition). Redeliveries after a crash are recognised by offset, not by this.
RECENT_IDS_KEPT = 64
# Hex characters of the digest kept beside each remembered id: 4 bytes of BLAKE2b of the message value, enough
# to tell an exact resend from a conflicting one, small beside the id (a JSON string per product, not per id)
DIGEST_BYTES = 4
DIGEST_CHARS = 2 * DIGEST_BYTES
EVENT_NAMESPACE = uuid.UUID("6f2d7c1e-3b1a-4c55-8e0f-5a7e1c9b2d40")
# What a Kafka record adds to its key and value (record batch header, record header, the dead letter's
# envelope fields): room kept under a topic's max.message.bytes.
RECORD_OVERHEAD = 1024
# Input contracts whose wire bytes the worker keeps in its state (one changelog record each)
KEPT_WHOLE = ("catalog_update", "tunnel_capture")
MATERIAL_FIELDS = ("title", "description", "bullet_points", "item_length_mm", "item_width_mm", "item_height_mm",
                   "item_weight_g")


MAX_KEY_KEPT = 1024  # bytes of an original key a dead letter keeps
MAX_REASON = 2048  # characters of a reason kept when the dead letter is cut to fit
DEAD_LETTER_FIELDS = 256  # bytes of a dead letter's other fields: error type, coordinates, times, size, digest


class TooLarge(ValueError):
    """A message too large to keep in state, or to dead-letter whole."""


# What admit() raises for a message the worker refuses (each becomes a dead letter with its reason).
REJECTIONS = (SerdeError, ValidationError, UnicodeDecodeError, TooLarge)


def admit(contract: str, key: bytes | None, value: bytes | None, serde: Serde, marketplaces: Mapping[str, Marketplace],
          times: EventTimes, max_value_bytes: int) -> tuple[str | None, dict]:
    """The worker's rules for one input message, in order: its size (catalog records and captures are kept
    whole in state), its wire format and contract, its values. (product id, record), or one of REJECTIONS
    saying why not. `packwise dataset build` lands by the same function, so what the worker dead-letters never
    becomes training data."""
    if contract in KEPT_WHOLE and value is not None:
        size = len(value) + len(key or b"")
        if size > max_value_bytes:
            raise TooLarge(f"too_large: the {contract} message is {size:,} bytes with its key; the worker keeps it "
                           f"whole in its state, whose changelog records hold at most {max_value_bytes:,}")
    product = key.decode("utf-8") if key is not None else None
    record = serde.decode(contract, value)
    validate(contract, record, product, marketplaces, times)
    return product, record


@dataclass(frozen=True)
class Incoming:
    """One consumed message, exactly as read."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class Outgoing:
    """One message to publish: its topic, product key and wire bytes (None: a tombstone)."""

    topic: str
    key: str
    value: bytes | None


@dataclass(frozen=True)
class ScoreJob:
    """A product to score with whatever it has: catalog text, tunnel images, or both; `source` is the
    topic and partition of the message that asked for it (the partition that owns the product's state)."""

    product_id: str
    catalog: dict[str, Any] | None
    capture: dict[str, Any] | None
    source: tuple[str, int]
    catalog_changed: bool = False


# Table writes must know the partition of the product they belong to (Faust routes changelog and RocksDB
# writes by the event being processed); the app passes a context that says so, tests pass none.
PartitionContext = Callable[[str, int], AbstractContextManager]


def no_context(topic: str, partition: int) -> AbstractContextManager:
    return nullcontext()


@dataclass(frozen=True)
class Limits:
    """The largest record the worker may write, in bytes: the smallest max.message.bytes among the topics it
    writes (outputs, dead letters, changelogs), read from the cluster at start-up (streams/topics.py)."""

    max_record_bytes: int = 1_000_000

    @property
    def max_value_bytes(self) -> int:
        return self.max_record_bytes - RECORD_OVERHEAD


@dataclass
class Tables:
    catalog: MutableMapping[str, bytes] = field(default_factory=dict)
    captures: MutableMapping[str, bytes] = field(default_factory=dict)
    pending: MutableMapping[str, dict] = field(default_factory=dict)
    products: MutableMapping[str, dict] = field(default_factory=dict)
    damage_stats: MutableMapping[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicNames:
    captures: str
    catalog: str
    shipments: str
    damage_reports: str
    decisions: str
    relabels: str
    tests: str
    test_results: str

    @classmethod
    def for_settings(cls, settings: Settings) -> "TopicNames":
        prefix = settings.topic_prefix
        return cls(*(prefix + base for base in (
            "tunnel-captures", "catalog-updates", "shipments", "damage-reports", "pack-type-decisions",
            "relabel-triggers", "test-requests", "test-results")))


class RequestStatus(str, enum.Enum):
    """Where a test request stands (the Avro enum TestRequestStatus)."""

    OPEN = "open"
    ANSWERED = "answered"  # a test result named it, or tested its type
    WITHDRAWN = "withdrawn"  # the decision made it moot, the type was ruled out, or the product left the catalog
    SUPERSEDED = "superseded"  # a new request for the product replaces it


@dataclass(frozen=True)
class OpenRequest:
    """A test request the worker published and has not closed: what its closing record repeats."""

    request_id: str
    package_type: str
    current_package_type: str
    weight_saved_g: float
    requested_at_ms: int
    legacy: bool = False  # asked by a worker before the request lifecycle (state["tests"])


def new_stats() -> dict:
    """Shipments and damages per package type (PACK_TYPES order); per input contract the [partition,
    offset] of the last event applied; the ids of the last RECENT_IDS_KEPT events applied, and in one string
    the digests of the last of them (DIGEST_CHARS each, in the same order, aligned to the end of `recent`).
    Physical test outcomes, once a product has one, are kept under "tests": package type -> "passed" / "failed"
    (absent from values written before test results existed, and from products never tested)."""
    return {"shipments": [0] * len(PACK_TYPES), "damages": [0] * len(PACK_TYPES), "seen": {}, "recent": [],
            "digests": ""}


def stats_of(value: dict | None) -> dict:
    """A product's evidence as new_stats() lays it out (values written before `seen` existed kept their
    applied ids under "applied"; values written before digests were kept have none for their ids)."""
    if value is None:
        return new_stats()
    if "seen" not in value:
        value = {"shipments": value["shipments"], "damages": value["damages"], "seen": {},
                 "recent": value.get("applied", [])[-RECENT_IDS_KEPT:]}
    if "digests" not in value:
        value["digests"] = ""
    return value


def applied_digest(stats: dict, event_id: str) -> str | None:
    """The digest kept for an applied event id (one in stats["recent"]); None for an id applied before digests
    were kept."""
    recent, digests = stats["recent"], stats["digests"]
    i = recent.index(event_id) - (len(recent) - len(digests) // DIGEST_CHARS)
    return digests[i * DIGEST_CHARS:(i + 1) * DIGEST_CHARS] if i >= 0 else None


def _millis_now(clock: Callable[[], float]) -> datetime:
    return datetime.fromtimestamp(round(clock(), 3), tz=timezone.utc)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _to_millis(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _from_millis(millis: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=millis)


class Processor:
    def __init__(self, settings: Settings, serde: Serde, marketplaces: Mapping[str, Marketplace], tables: Tables,
                 clock: Callable[[], float] = time.time, context: PartitionContext = no_context,
                 limits: Limits = Limits(), legacy_targets: Mapping[str, float] | None = None) -> None:
        """`legacy_targets`: bundle version -> the single target at which that bundle's verdicts kept by workers
        before per-target certification were made (the loaded bundle's: models.bundle_files.single_target). A
        kept verdict of another version names no target, so it certifies nothing until the product is scored
        again."""
        self.settings = settings
        self.legacy_targets = dict(legacy_targets or {})
        self.serde = serde
        self.marketplaces = marketplaces
        self.tables = tables
        self.topics = TopicNames.for_settings(settings)
        self.clock = clock
        self.context = context
        self.limits = limits
        earliest = settings.event_time_earliest
        self._earliest = datetime(earliest.year, earliest.month, earliest.day, tzinfo=timezone.utc)
        # products whose statistics changed since the last decide_changed(): (source partition, marketplace)
        self.undecided: dict[str, tuple[tuple[str, int], str | None]] = {}
        self._decide = functools.lru_cache(maxsize=1 << 16)(self._decide_uncached)

    # -- reading ---------------------------------------------------------------------------------------

    def _event_times(self) -> EventTimes:
        """The event times a batch may carry, by the worker's clock as it reads the batch (once per batch:
        the statistics path is CPU-bound per event)."""
        ahead = self.settings.event_time_max_ahead_s
        return EventTimes(self._earliest, datetime.fromtimestamp(self.clock() + ahead, tz=timezone.utc), ahead)

    def _read(self, message: Incoming, contract: str, times: EventTimes,
              out: list[Outgoing]) -> tuple[str, dict] | None:
        """(product id, record) of a valid message; anything else goes to the dead-letter topic."""
        try:
            return admit(contract, message.key, message.value, self.serde, self.marketplaces, times,
                         self.limits.max_value_bytes)
        except REJECTIONS as error:
            out.append(self._dead_letter(message, error))
            return None

    def _dead_letter(self, message: Incoming, error: Exception) -> Outgoing:
        """The message, its coordinates and the reason, as one dead letter that fits the dead-letter topic:
        an original too large to go whole is cut to what fits, with its size and SHA-256 kept."""
        error_type = type(error).__name__ if isinstance(error, (SerdeError, TooLarge)) else "ValidationError"
        reason = str(error) if not isinstance(error, UnicodeDecodeError) else f"message key is not UTF-8: {error}"
        original_key = message.key[:MAX_KEY_KEPT] if message.key else message.key
        value = message.value

        def room() -> int:  # for the original value, beside everything else the dead letter holds
            return (self.limits.max_value_bytes - len(original_key or b"") - len(reason.encode())
                    - len(message.topic) - DEAD_LETTER_FIELDS)

        if value is not None and len(value) > room():
            error_type = "TooLarge"
            reason = f"too_large: {reason[:MAX_REASON]} (the dead letter keeps the first bytes of the {len(value):,})"
            value = value[:room()]
        metrics.DEAD_LETTERS.labels(topic=message.topic, error_type=error_type).inc()
        log.warning("dead_letter", topic=message.topic, partition=message.partition, offset=message.offset,
                    error_type=error_type, reason=reason)
        size = len(message.value) if message.value is not None else None
        envelope = {"reason": reason, "error_type": error_type, "original_key": original_key,
                    "original_value": value, "topic": message.topic, "partition": message.partition,
                    "offset": message.offset, "failed_at": _millis_now(self.clock), "original_size": size,
                    "original_sha256": hashlib.sha256(message.value).hexdigest() if message.value is not None else None}
        key = original_key.decode("utf-8", errors="replace") if original_key else ""
        return Outgoing(message.topic + DEAD_LETTER_SUFFIX, key, self.serde.encode("dead_letter", envelope))

    def _decoded(self, contract: str, data: bytes | None) -> dict | None:
        """A record this worker stored itself: valid by construction."""
        return self.serde.decode(contract, data) if data else None

    # -- inputs ----------------------------------------------------------------------------------------

    def on_catalog(self, batch: list[Incoming]) -> tuple[list[Outgoing], list[ScoreJob]]:
        out: list[Outgoing] = []
        jobs: list[ScoreJob] = []
        times = self._event_times()
        for message in batch:
            with self.context(message.topic, message.partition):
                self._on_catalog(message, times, out, jobs)
        return out, jobs

    def _on_catalog(self, message: Incoming, times: EventTimes, out: list[Outgoing], jobs: list[ScoreJob]) -> None:
        t = self.tables
        if message.value is None and message.key:  # tombstone: the product left the catalog
            out += self._forget(message.key.decode("utf-8", errors="replace"))
            return
        read = self._read(message, "catalog_update", times, out)
        if read is None:
            return
        product, record = read
        previous = self._decoded("catalog_update", t.catalog.get(product))
        t.catalog[product] = message.value
        state = t.products.get(product) or {}
        state["marketplace"] = record["marketplace"]
        state["item_mm"] = [record["item_length_mm"], record["item_width_mm"], record["item_height_mm"]]
        t.products[product] = state
        source = (message.topic, message.partition)
        if product in t.pending:
            del t.pending[product]
            jobs.append(ScoreJob(product, record, self._decoded("tunnel_capture", t.captures.get(product)), source))
        elif previous and any(previous[f] != record[f] for f in MATERIAL_FIELDS):
            forgot_tests = self._forget_tests(product, state)
            if state.get("model") or product in t.captures:
                # a captured product whose first verdict is still being scored (from the old text) is scored again
                jobs.append(ScoreJob(product, record, self._decoded("tunnel_capture", t.captures.get(product)),
                                     source, catalog_changed=True))
            elif forgot_tests:
                self.undecided[product] = (source, record["marketplace"])

    def stats(self, product: str, state: Mapping[str, Any] | None = None) -> dict:
        """The product's evidence, laid out as new_stats(): kept in its products record (`state`, when the caller
        holds it), or, for a product whose evidence an older worker kept in damage_stats and that got no event
        since, read from there."""
        if state is None:
            state = self.tables.products.get(product) or {}
        kept = state.get("stats")
        if kept is not None:
            return stats_of(kept)
        legacy = self.tables.damage_stats.get(product)  # a copy: the caller changes it, that table stays as it was
        return stats_of(copy.deepcopy(legacy) if legacy is not None else None)

    def _forget_tests(self, product: str, state: dict) -> bool:
        """A material change makes a new product as far as the lab is concerned: its test outcomes, passes and
        failures alike, no longer hold (a pass for the mug says nothing about the vase it became). `state`: its
        products record, which this writes back when it changes."""
        stats = self.stats(product, state)
        if not stats.get("tests"):
            return False
        state["stats"] = {**stats, "tests": {}}
        self.tables.products[product] = state
        return True

    def _forget(self, product: str) -> list[Outgoing]:
        t = self.tables
        state = t.products.get(product) or {}
        out = [Outgoing(self.topics.decisions, product, None)] if state.get("decision") else []
        now = _millis_now(self.clock)
        out += [self._closing_message(product, state, request, RequestStatus.WITHDRAWN, "the product left the catalog",
                                      now) for request in self._open_requests(product, state)]
        for table in (t.catalog, t.captures, t.pending):
            table.pop(product, None)
        if "stats" in state:  # its shipments and reports happened: they count again if it comes back
            t.products[product] = {"stats": state["stats"]}
        else:
            t.products.pop(product, None)
        return out

    def on_captures(self, batch: list[Incoming]) -> tuple[list[Outgoing], list[ScoreJob]]:
        out: list[Outgoing] = []
        jobs: list[ScoreJob] = []
        times = self._event_times()
        for message in batch:
            with self.context(message.topic, message.partition):
                self._on_capture(message, times, out, jobs)
        return out, jobs

    def _on_capture(self, message: Incoming, times: EventTimes, out: list[Outgoing], jobs: list[ScoreJob]) -> None:
        t = self.tables
        read = self._read(message, "tunnel_capture", times, out)
        if read is None:
            return
        product, record = read
        t.captures[product] = message.value
        state = t.products.get(product) or {}
        if "item_mm" not in state:
            state["item_mm"] = [record["measured_length_mm"], record["measured_width_mm"],
                                record["measured_height_mm"]]
            t.products[product] = state
        catalog = self._decoded("catalog_update", t.catalog.get(product))
        if catalog is not None:
            jobs.append(ScoreJob(product, catalog, record, (message.topic, message.partition)))
        elif product not in t.pending:  # kept until its catalog record arrives, never dropped
            t.pending[product] = {"since": self.clock(), "partition": message.partition}

    def on_damage_events(self, batch: list[Incoming]) -> list[Outgoing]:
        """Shipments, damage reports and physical test results: each event applied once; the products are re-decided at the next
        state flush (decide_changed). Each product's statistics are read and written once per batch, however
        many of its events it holds (and reach the changelog once per flush).

        Counted once: a product remembers the highest offset it applied from each input partition, so a
        redelivery after a crash or rebalance (Kafka replays from the last commit, in offset order) is
        recognised exactly; and the ids of its last RECENT_IDS_KEPT events, for a producer that sent the
        same event twice. A remembered id whose message differs from the applied one (by digest) is not a
        resend but another event under a used id: it goes to the dead-letter topic as conflicting_duplicate."""
        out: list[Outgoing] = []
        t = self.tables
        contracts = {self.topics.shipments: "shipment", self.topics.damage_reports: "damage_report",
                     self.topics.test_results: "test_result"}
        # product -> its products record, its evidence, source, marketplace
        touched: dict[str, tuple[dict, dict, tuple[str, int], str | None]] = {}
        times = self._event_times()
        for message in batch:
            contract = contracts.get(message.topic, "damage_report")
            read = self._read(message, contract, times, out)
            if read is None:
                continue
            product, record = read
            if product in touched:
                state, stats, source, marketplace = touched[product]
            else:
                with self.context(message.topic, message.partition):
                    state = t.products.get(product) or {}
                    stats, source, marketplace = self.stats(product, state), None, None
            seen = stats["seen"].get(contract)
            if seen is not None and seen[0] == message.partition and message.offset <= seen[1]:
                metrics.DUPLICATES.labels(topic=message.topic).inc()  # redelivered
                continue
            stats["seen"][contract] = [message.partition, message.offset]
            event_id = record["event_id"]
            digest = hashlib.blake2b(message.value, digest_size=DIGEST_BYTES).hexdigest()
            if event_id in stats["recent"]:
                if applied_digest(stats, event_id) in (None, digest):
                    metrics.DUPLICATES.labels(topic=message.topic).inc()  # sent twice
                else:
                    out.append(self._dead_letter(message, ValidationError(
                        f"conflicting_duplicate: event_id {event_id!r} was applied before to product {product!r} "
                        "with other contents; the first one counts, and only an exact resend may repeat an id")))
                touched[product] = (state, stats, (message.topic, message.partition), marketplace)
                continue
            if contract == "test_result":  # the latest outcome per type counts
                passed = record["samples_passed"] == record["samples_tested"]
                stats.setdefault("tests", {})[record["package_type"]] = (
                    TestOutcome.PASSED if passed else TestOutcome.FAILED).value
                metrics.TEST_RESULTS.labels(package_type=record["package_type"],
                                            outcome="passed" if passed else "failed").inc()
                out += self._answer_requests(product, state, record, passed)
            else:
                column = "shipments" if contract == "shipment" else "damages"
                stats[column][PackType(record["package_type"]).index] += 1
            stats["recent"].append(event_id)
            stats["digests"] += digest
            touched[product] = (state, stats, (message.topic, message.partition),
                                record["marketplace"] if contract != "damage_report" else marketplace)
        undecided = self.undecided
        for product, (state, stats, source, marketplace) in touched.items():
            del stats["recent"][:-RECENT_IDS_KEPT]
            stats["digests"] = stats["digests"][-RECENT_IDS_KEPT * DIGEST_CHARS:]
            state["stats"] = stats
            with self.context(*source):
                t.products[product] = state
            if product in undecided:
                marketplace = marketplace or undecided[product][1]
            undecided[product] = (source, marketplace)
        return out

    def decide_changed(self) -> list[Outgoing]:
        """Re-decide, once each, the products whose statistics changed since the last call. The worker calls
        it at the start of every state flush (streams/state.py), so a product that got many shipments and
        reports between two flushes is decided once, on all of them, and its decision is durable with them."""
        out: list[Outgoing] = []
        t = self.tables
        undecided, self.undecided = self.undecided, {}
        for product, (source, marketplace) in undecided.items():
            with self.context(*source):
                state = t.products.get(product) or {}
                learned = bool(marketplace and "marketplace" not in state)
                if learned:
                    state = {**state, "marketplace": marketplace}
                out += self.redecide(product, state=state, changed=learned)
        return out

    def due_pending(self) -> list[ScoreJob]:
        """Captures that waited catalog_wait_s for a catalog record: score them on images alone."""
        now = self.clock()
        t = self.tables
        jobs = []
        for product, waiting in list(t.pending.items()):
            if now - waiting["since"] < self.settings.catalog_wait_s:
                continue
            with self.context(self.topics.captures, waiting["partition"]):
                del t.pending[product]
                capture = self._decoded("tunnel_capture", t.captures.get(product))
            jobs.append(ScoreJob(product, None, capture, (self.topics.captures, waiting["partition"])))
        return jobs

    def apply_scores(self, jobs: list[ScoreJob], views: list[ModelView | None]) -> list[Outgoing]:
        """The model's verdicts, and the decisions they lead to. A None view: the model could not score the
        product at all; it is decided without a verdict (statistics alone: it goes to test), never left out."""
        out: list[Outgoing] = []
        for job, view in zip(jobs, views, strict=True):
            with self.context(*job.source):
                state = self.tables.products.get(job.product_id) or {}
                state["verdict_sought"] = True  # decisions without a verdict are final from now on
                if view is not None:
                    state["model"] = {"p": [view.probabilities[p] for p in PACK_TYPES],
                                      "ok": {repr(float(target)): "".join("1" if ok[p] else "0" for p in PACK_TYPES)
                                             for target, ok in view.certified.items()},
                                      "version": view.version}
                out += self.redecide(job.product_id, catalog_changed=job.catalog_changed, state=state, changed=True)
        return out

    # -- deciding --------------------------------------------------------------------------------------

    def redecide(self, product: str, catalog_changed: bool = False, state: dict | None = None,
                 stats: dict | None = None, changed: bool = False) -> list[Outgoing]:
        """Ask the policy again; publish the decision if it changed, a relabel trigger if the package type
        moved, and a test request the first time a lighter type is worth testing. `state` and `stats` are
        the product's current table values when the caller holds them already; `changed`: the caller
        changed `state` and leaves writing it to this method (one table write for both)."""
        t = self.tables
        if state is None:
            state = t.products.get(product) or {}
        model = state.get("model")
        if stats is None:
            stats = self.stats(product, state)
        market = self._market(state)
        decision = self._decide(self._verdict(model) if model else None,
                                tuple(stats["shipments"]), tuple(stats["damages"]), market.code,
                                tuple(state.get("item_mm") or (0.0, 0.0, 0.0)), not state.get("verdict_sought"),
                                tuple(sorted((stats.get("tests") or {}).items())),
                                product if market.audit_share > 0 else None)  # keyed per product only then

        out: list[Outgoing] = []
        previous = state.get("decision")
        now = None  # stamped only when something is published: most re-decisions change nothing
        current = {"package_type": decision.package_type.value, "status": decision.status.value,
                   "model_version": decision.model_version, "provisional": decision.provisional,
                   "chosen_by": decision.chosen_by.value}
        # a decision kept before chosen_by existed is not re-published for the field alone
        if previous is None or any(previous.get(k, False) != v for k, v in current.items()
                                   if k in previous or k != "chosen_by"):
            seq = (previous or {}).get("seq", 0) + 1
            state["decision"] = {**current, "seq": seq}
            now = _millis_now(self.clock)
            out.append(self._decision_message(product, market, decision, seq, now,
                                              tuple(state.get("item_mm") or (0.0, 0.0, 0.0))))
            metrics.DECISIONS.labels(package_type=decision.package_type.value, status=decision.status.value).inc()
            if decision.chosen_by is ChosenBy.AUDIT and not (previous and previous.get("chosen_by") == "audit"
                                                             and previous["package_type"] == current["package_type"]):
                metrics.AUDITS.labels(marketplace=market.code, package_type=decision.package_type.value).inc()
            trigger = relabel(PackType(previous["package_type"]) if previous else None, decision, catalog_changed,
                              bool(previous and previous.get("provisional")))
            if trigger is not None:
                out.append(self._relabel_message(product, market, trigger, decision, seq, now))
                metrics.RELABELS.labels(cause=trigger.cause.value).inc()
        out += self._follow_requests(product, state, stats, market, decision,
                                     previous["package_type"] if previous else None, now)
        if out or changed:
            t.products[product] = state
        return out

    def _verdict(self, model: Mapping[str, Any]) -> tuple:
        """A kept model verdict as plain values for the memoized policy: (probabilities, ((target, "0111"), ...),
        version)."""
        ok = model["ok"]
        if isinstance(ok, list):  # kept before per-target certification: one verdict, at its bundle's target
            target = self.legacy_targets.get(model["version"])
            ok = {} if target is None else {repr(target): "".join("1" if c else "0" for c in ok)}
        return tuple(model["p"]), tuple(sorted((float(t), bits) for t, bits in ok.items())), model["version"]

    def _market(self, state: Mapping[str, Any]) -> Marketplace:
        return self.marketplaces.get(state.get("marketplace", ""), self.marketplaces[self.settings.default_marketplace])

    # -- test requests ---------------------------------------------------------------------------------

    def _open_requests(self, product: str, state: Mapping[str, Any], current: str | None = None) -> list[OpenRequest]:
        """The product's open test requests: the one its state holds, and those a worker before the request
        lifecycle asked for (state["tests"]; named by their type, asked under `current`, the decision then)."""
        requests = []
        request = state.get("request")
        if request and "type" in request:
            requests.append(OpenRequest(self._event_id(product, "test", request["n"]), request["type"], request["from"],
                                        request["g"], request["at"]))
        legacy = state.get("tests")
        if legacy:
            current = current or (state.get("decision") or {}).get("package_type") or PackType.BOX.value
            market, item_mm = self._market(state), tuple(state.get("item_mm") or (0.0, 0.0, 0.0))
            # what an old request saved and when it was made were not kept: its weight is the configured one's,
            # and its time the closing one's
            asked_at = _to_millis(_millis_now(self.clock))
            for pack in legacy:
                saved = (market.packaging_weight_g(PackType(current), item_mm)
                         - market.packaging_weight_g(PackType(pack), item_mm))
                requests.append(OpenRequest(self._event_id(product, "test", pack), pack, current, max(saved, 0.0),
                                            asked_at, legacy=True))
        return requests

    def _follow_requests(self, product: str, state: dict, stats: Mapping[str, Any], market: Marketplace,
                         decision: Decision, previous: str | None, now: datetime | None) -> list[Outgoing]:
        """Keep the product's test request in step with its decision: the test the policy proposes (under the
        decision it was asked in, for the saving it was asked for) is the one open request; any other closes
        first: answered when its type has a test outcome, withdrawn when the decision makes it moot, superseded
        when a new request replaces it."""
        proposal = decision.test
        request = state.get("request") or {}
        wanted = ((proposal.package_type.value, decision.package_type.value, proposal.weight_saved_g)
                  if proposal else None)
        held = (request["type"], request["from"], request["g"]) if "type" in request else None
        legacy = state.pop("tests", None)
        if held == wanted and not legacy:
            return []  # most re-decisions: nothing to ask, or the same test still open
        now = now or _millis_now(self.clock)
        n = request.get("n", 0)
        opening = wanted is not None and held != wanted
        new_id = self._event_id(product, "test", n + 1) if opening else None
        kept = self._event_id(product, "test", n) if held is not None and held == wanted else None
        item_mm = tuple(state.get("item_mm") or (0.0, 0.0, 0.0))
        out = []
        for old in self._open_requests(product, {**state, "tests": legacy}, previous):
            if old.request_id == kept:
                continue
            outcome = (stats.get("tests") or {}).get(old.package_type)
            moot = withdrawal_reason(decision, PackType(old.package_type), market, item_mm)
            if outcome is not None:  # a result whose answer was not recorded (a crash between two flushes)
                status, reason = RequestStatus.ANSWERED, f"{old.package_type} {outcome} a physical test"
            elif moot is not None:
                status, reason = RequestStatus.WITHDRAWN, moot
            elif new_id is not None:
                status, reason = RequestStatus.SUPERSEDED, (
                    f"replaced by a test of {wanted[0]} while the product ships in {wanted[1]} (saves "
                    f"{wanted[2]:.0f} g per unit)")
            else:
                status, reason = RequestStatus.WITHDRAWN, "no physical test is proposed for the product now"
            out.append(self._closing_message(product, state, old, status, reason, now,
                                             new_id if status is RequestStatus.SUPERSEDED else None))
        if opening:
            state["request"] = {"n": n + 1, "type": wanted[0], "from": wanted[1], "g": wanted[2],
                                "at": _to_millis(now)}
            out.append(self._test_message(product, market, decision, n + 1, now))
        elif wanted is None and n:
            state["request"] = {"n": n}
        return out

    def _answer_requests(self, product: str, state: dict, result: Mapping[str, Any], passed: bool) -> list[Outgoing]:
        """Close as answered the product's open request that a test result names, or whose type it tested, in its
        products record `state` (which the caller writes)."""
        out = []
        for request in self._open_requests(product, state):
            if result["request_id"] != request.request_id and result["package_type"] != request.package_type:
                continue
            reason = (f"{result['package_type']} {'passed' if passed else 'failed'} a physical test: "
                      f"{result['samples_passed']} of {result['samples_tested']} samples undamaged "
                      f"({result['protocol']}, lab {result['lab']})")
            out.append(self._closing_message(product, state, request, RequestStatus.ANSWERED, reason,
                                             _millis_now(self.clock)))
            if request.legacy:
                state["tests"] = [pack for pack in state["tests"] if pack != request.package_type]
            else:
                state["request"] = {"n": state["request"]["n"]}
        return out

    def _decide_uncached(self, model: tuple | None, shipments: tuple[int, ...], damages: tuple[int, ...],
                         market_code: str, item_mm: tuple[float, float, float], awaiting_verdict: bool,
                         tests: tuple[tuple[str, str], ...] = (), audit_key: str | None = None) -> Decision:
        """The policy on plain values, so that its answers can be memoized: many products share a model
        verdict-free state or the same counts (Decisions are immutable). `audit_key`: the product id where its
        marketplace audits (each product's draw is its own), else None."""
        view = ModelView(dict(zip(PACK_TYPES, model[0])),
                         {target: {p: bit == "1" for p, bit in zip(PACK_TYPES, bits)} for target, bits in model[1]},
                         model[2]) if model else None
        counts = {p: Counts(shipments[i], damages[i]) for i, p in enumerate(PACK_TYPES)}
        market = self.marketplaces.get(market_code) or self.marketplaces[self.settings.default_marketplace]
        outcomes = {PackType(pack): TestOutcome(outcome) for pack, outcome in tests}
        return decide(view, counts, market, item_mm, awaiting_verdict, outcomes, audit_key)

    def _event_id(self, product: str, kind: str, seq: int | str) -> str:
        """Deterministic ids: a decision re-published after a redelivery carries the same id."""
        return str(uuid.uuid5(EVENT_NAMESPACE, f"{product}/{kind}/{seq}"))

    def _decision_message(self, product: str, market: Marketplace, decision: Decision, seq: int,
                          now: datetime, item_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Outgoing:
        record = {
            "event_id": self._event_id(product, "decision", seq), "product_id": product,
            "marketplace": market.code, "package_type": decision.package_type.value,
            "status": decision.status.value, "reason": decision.reason,
            "evidence": [{"package_type": e.package_type.value, "model_probability": e.model_probability,
                          "model_certified": e.model_certified, "shipments": e.shipments, "damages": e.damages,
                          "damage_rate_lower": e.damage_rate_lower, "damage_rate_upper": e.damage_rate_upper}
                         for e in decision.evidence],
            "target_damage_rate": decision.target_damage_rate, "model_version": decision.model_version,
            "decided_at": now, "provisional": decision.provisional,
            # what ops total as "packaging saved against all-box" (the console, dashboards)
            "packaging_weight_g": market.packaging_weight_g(decision.package_type, item_mm),
            "all_box_weight_g": market.packaging_weight_g(PackType.BOX, item_mm),
            # how the type was chosen: which outcomes are honest evidence (models/REPORT.md)
            "chosen_by": decision.chosen_by.value, "audit_propensity": decision.audit_propensity,
        }
        return Outgoing(self.topics.decisions, product, self.serde.encode("pack_type_decision", record, validate=False))

    def _relabel_message(self, product: str, market: Marketplace, trigger: Relabel, decision: Decision, seq: int,
                         now: datetime) -> Outgoing:
        e = trigger.evidence
        record = {
            "event_id": self._event_id(product, "relabel", seq), "product_id": product, "marketplace": market.code,
            "from_package_type": trigger.from_package_type.value, "to_package_type": trigger.to_package_type.value,
            "cause": trigger.cause.value, "reason": trigger.reason, "shipments": e.shipments, "damages": e.damages,
            "damage_rate_lower": e.damage_rate_lower, "damage_rate_upper": e.damage_rate_upper,
            "model_version": decision.model_version, "triggered_at": now,
        }
        return Outgoing(self.topics.relabels, product, self.serde.encode("relabel_trigger", record, validate=False))

    def _test_message(self, product: str, market: Marketplace, decision: Decision, n: int, now: datetime) -> Outgoing:
        """The product's n-th test request, open. (Workers before the request lifecycle named a request by its
        type, product/test/<type>; numbered ids never meet those.)"""
        test = decision.test
        assert test is not None
        request_id = self._event_id(product, "test", n)
        record = {
            "event_id": request_id, "product_id": product,
            "marketplace": market.code, "package_type": test.package_type.value,
            "current_package_type": decision.package_type.value, "weight_saved_g": test.weight_saved_g,
            "model_probability": test.model_probability, "model_version": decision.model_version,
            "requested_at": now, "status": RequestStatus.OPEN.value, "request_id": request_id,
        }
        return Outgoing(self.topics.tests, product, self.serde.encode("test_request", record, validate=False))

    def _closing_message(self, product: str, state: Mapping[str, Any], request: OpenRequest, status: RequestStatus,
                         reason: str, now: datetime, superseded_by: str | None = None) -> Outgoing:
        """The record that closes `request`: the request's own fields again, and how and why it closed."""
        record = {
            "event_id": self._event_id(product, status.value, request.request_id), "product_id": product,
            "marketplace": self._market(state).code, "package_type": request.package_type,
            "current_package_type": request.current_package_type, "weight_saved_g": request.weight_saved_g,
            "model_probability": None, "model_version": (state.get("model") or {}).get("version"),
            "requested_at": _from_millis(request.requested_at_ms),
            "status": status.value, "request_id": request.request_id, "closed_at": now, "reason": reason,
            "superseded_by": superseded_by,
        }
        return Outgoing(self.topics.tests, product, self.serde.encode("test_request", record, validate=False))
