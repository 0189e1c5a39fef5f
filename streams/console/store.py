"""The console's state: the output topics (and the evidence inputs it audits) folded into SQLite on disk.

No Kafka here: `ConsoleStore.apply` folds decoded events, the queries answer the pages. Everything a page
needs at a glance is kept as running aggregates updated with each event, so the overview costs the same at
ten products as at ten million; per-product rows are read by primary key or a covering index.

The offsets read are stored in the same transaction as the state they produced, so a console that crashes
resumes exactly where its state is, and never folds an event twice (DESIGN.md invariant 2, for a reader).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from models.packtypes import PACK_TYPES, PackType
from streams.logs import get_logger

log = get_logger("packwise.console")

OPEN = "open"
# A test request closes as: answered (a result for it arrived), withdrawn (the decision made it moot),
# superseded (a newer request for the product replaced it). The worker publishes these on the test-requests
# topic (records with a request_id); requests from workers before the lifecycle (none) are closed the way
# `watch` closes them: by a decision that reaches the tested type, a result, or the product leaving.
CLOSED_STATUSES = ("answered", "withdrawn", "superseded")
HISTORY_KEPT = 200  # decisions per product kept (its page, and which decision a shipment was made under)
DEAD_LETTER_BYTES_KEPT = 256 * 1024  # a larger original is read back from its dead-letter topic when needed
MINUTE_MS = 60_000
LAYOUT_VERSION = 1  # of the tables below; a store of another layout is read again from the topics

SCHEMA = """
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS offsets (topic TEXT, partition INTEGER, next_offset INTEGER,
    PRIMARY KEY (topic, partition));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS decisions (product_id TEXT PRIMARY KEY, marketplace TEXT, package_type TEXT,
    status TEXT, reason TEXT, model_version TEXT, decided_at INTEGER, provisional INTEGER, target REAL,
    packaging_g REAL, box_g REAL);
CREATE INDEX IF NOT EXISTS decisions_recent ON decisions (decided_at);
CREATE TABLE IF NOT EXISTS decision_history (product_id TEXT, decided_at INTEGER, event_id TEXT,
    package_type TEXT, status TEXT, reason TEXT, model_version TEXT, provisional INTEGER, target REAL,
    evidence TEXT, PRIMARY KEY (product_id, decided_at, event_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS decision_counts (marketplace TEXT, package_type TEXT, status TEXT, model_version TEXT,
    products INTEGER, packaging_g REAL, box_g REAL, PRIMARY KEY (marketplace, package_type, status, model_version));
CREATE TABLE IF NOT EXISTS saved_series (minute INTEGER PRIMARY KEY, packaging_g REAL, box_g REAL, products INTEGER);
CREATE TABLE IF NOT EXISTS triggers (event_id TEXT PRIMARY KEY, product_id TEXT, marketplace TEXT,
    from_type TEXT, to_type TEXT, cause TEXT, reason TEXT, shipments INTEGER, damages INTEGER,
    damage_rate_lower REAL, damage_rate_upper REAL, model_version TEXT, triggered_at INTEGER);
CREATE INDEX IF NOT EXISTS triggers_product ON triggers (product_id, triggered_at);
CREATE INDEX IF NOT EXISTS triggers_recent ON triggers (triggered_at);
CREATE TABLE IF NOT EXISTS trigger_minutes (minute INTEGER, cause TEXT, triggers INTEGER, PRIMARY KEY (minute, cause));
CREATE TABLE IF NOT EXISTS tests (product_id TEXT, package_type TEXT, marketplace TEXT, current_type TEXT,
    weight_saved_g REAL, model_probability REAL, model_version TEXT, requested_at INTEGER, event_id TEXT,
    status TEXT, closed_at INTEGER, lifecycle INTEGER, PRIMARY KEY (product_id, package_type));
CREATE INDEX IF NOT EXISTS tests_queue ON tests (status, weight_saved_g);
CREATE TABLE IF NOT EXISTS test_counts (marketplace TEXT PRIMARY KEY, open INTEGER, grams REAL);
CREATE TABLE IF NOT EXISTS test_results (event_id TEXT PRIMARY KEY, product_id TEXT, package_type TEXT,
    protocol TEXT, samples_tested INTEGER, samples_passed INTEGER, failure_codes TEXT, lab TEXT, tested_at INTEGER,
    request_id TEXT);
CREATE INDEX IF NOT EXISTS test_results_product ON test_results (product_id, tested_at);
CREATE TABLE IF NOT EXISTS sites (product_id TEXT PRIMARY KEY, site TEXT);
CREATE TABLE IF NOT EXISTS site_names (site TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shipments (event_id TEXT PRIMARY KEY, shipment_id TEXT, product_id TEXT,
    package_type TEXT, marketplace TEXT, shipped_at INTEGER, certified INTEGER);
CREATE INDEX IF NOT EXISTS shipments_product ON shipments (product_id, package_type, shipped_at);
CREATE INDEX IF NOT EXISTS shipments_id ON shipments (shipment_id);
CREATE TABLE IF NOT EXISTS reports (event_id TEXT PRIMARY KEY, shipment_id TEXT);
CREATE INDEX IF NOT EXISTS reports_shipment ON reports (shipment_id);
CREATE TABLE IF NOT EXISTS cohort (marketplace TEXT, package_type TEXT, shipments INTEGER, damages INTEGER,
    PRIMARY KEY (marketplace, package_type));
CREATE TABLE IF NOT EXISTS dead_letters (dlq_topic TEXT, partition INTEGER, offset INTEGER, source_topic TEXT,
    reason_code TEXT, reason TEXT, error_type TEXT, failed_at INTEGER, source_partition INTEGER,
    source_offset INTEGER, original_key BLOB, original_value BLOB, original_size INTEGER, original_sha256 TEXT,
    replay_state TEXT, replayed_at INTEGER, PRIMARY KEY (dlq_topic, partition, offset));
CREATE INDEX IF NOT EXISTS dead_letters_recent ON dead_letters (failed_at);
CREATE TABLE IF NOT EXISTS dead_letter_counts (source_topic TEXT, reason_code TEXT, dead_letters INTEGER,
    PRIMARY KEY (source_topic, reason_code));
"""


def millis(moment: datetime | int | None) -> int | None:
    if moment is None or isinstance(moment, int):
        return moment
    return int(moment.timestamp() * 1000)


def moment(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def reason_code(reason: str) -> str:
    """The code word a dead-letter reason starts with ('event_time: ...' -> 'event_time')."""
    head = reason.split(":", 1)[0].strip()
    return head if head and " " not in head and len(head) <= 40 else "other"


def _lighter_or_same(package_type: str, than: str) -> bool:
    return PackType(package_type).index <= PackType(than).index


class Kind:
    """What a topic carries, as the console folds it."""

    DECISION = "pack_type_decision"
    RELABEL = "relabel_trigger"
    TEST_REQUEST = "test_request"
    TEST_RESULT = "test_result"
    SHIPMENT = "shipment"
    DAMAGE_REPORT = "damage_report"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True)
class Folded:
    """One message as the reader hands it over: where it was read, its key and its decoded record (None: a
    tombstone, or with `undecodable` a message the console could not read)."""

    topic: str
    partition: int
    offset: int
    kind: str
    key: str | None
    record: Mapping[str, Any] | None
    undecodable: bool = False


class ConsoleStore:
    """SQLite on disk. One writer (the reader thread) and any number of readers (the web handlers), each on
    its own connection: WAL lets pages be served while a batch is folded."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self.version = 0  # bumped after each folded batch: live pages refresh when it moves
        self.rebuilt = self._discard_other_layout()
        self._write = self._connect()
        self._write.executescript(SCHEMA)
        self._write.execute(f"PRAGMA user_version = {LAYOUT_VERSION}")

    def _discard_other_layout(self) -> bool:
        """The store is derived from the topics: one written by a console of another layout is deleted and read
        again from the topics, rather than migrated. Returns whether that happened."""
        if not self.path.exists():
            return False
        with sqlite3.connect(self.path) as connection:
            found = connection.execute("PRAGMA user_version").fetchone()[0]
        connection.close()
        if found == LAYOUT_VERSION:
            return False
        log.warning("console_store_rebuilt", path=str(self.path), layout=found, expected=LAYOUT_VERSION)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        return True

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA synchronous = NORMAL")  # WAL: a power cut may lose the last batch, then re-read
        connection.execute("PRAGMA cache_size = -16000")  # 16 MB per connection: the RSS stays flat at any size
        connection.execute("PRAGMA journal_size_limit = 67108864")  # the WAL shrinks back after a catch-up
        return connection

    @property
    def read(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._connect()
        return connection

    def close(self) -> None:
        self._write.close()
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()

    # -- folding --------------------------------------------------------------------------------------

    def offsets(self) -> dict[tuple[str, int], int]:
        return {(r["topic"], r["partition"]): r["next_offset"]
                for r in self._write.execute("SELECT topic, partition, next_offset FROM offsets")}

    def apply(self, batch: Iterable[Folded]) -> int:
        """Fold a batch in one transaction, offsets included; returns how many messages were folded."""
        db = self._write
        folded = 0
        db.execute("BEGIN IMMEDIATE")
        try:
            positions: dict[tuple[str, int], int] = {}
            for message in batch:
                positions[(message.topic, message.partition)] = message.offset + 1
                folded += 1
                if message.undecodable:
                    self._bump_meta(db, f"undecodable:{message.topic}")
                    continue
                self._fold(db, message)
            db.executemany("INSERT INTO offsets VALUES (?, ?, ?) ON CONFLICT (topic, partition) DO UPDATE SET "
                           "next_offset = excluded.next_offset", [(t, p, o) for (t, p), o in positions.items()])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if folded:
            self.version += 1
        return folded

    def _fold(self, db: sqlite3.Connection, m: Folded) -> None:
        r = m.record
        if m.kind == Kind.DECISION:
            if r is None:
                self._forget(db, m.key)
            else:
                self._on_decision(db, r)
        elif r is None:
            return  # only decisions are compacted: a tombstone elsewhere means nothing
        elif m.kind == Kind.RELABEL:
            self._on_trigger(db, r)
        elif m.kind == Kind.TEST_REQUEST:
            self._on_test_request(db, r)
        elif m.kind == Kind.TEST_RESULT:
            self._on_test_result(db, r)
        elif m.kind == Kind.SHIPMENT:
            self._on_shipment(db, r)
        elif m.kind == Kind.DAMAGE_REPORT:
            self._on_damage_report(db, r)
        elif m.kind == Kind.DEAD_LETTER:
            self._on_dead_letter(db, m.topic, m.partition, m.offset, r)

    @staticmethod
    def _bump_meta(db: sqlite3.Connection, key: str, by: int = 1) -> None:
        db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
                   (key, by))

    def _count_decision(self, db: sqlite3.Connection, row: Mapping[str, Any], sign: int) -> None:
        packaging, box = row["packaging_g"], row["box_g"]
        db.execute("INSERT INTO decision_counts VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                   "products = products + excluded.products, packaging_g = packaging_g + excluded.packaging_g, "
                   "box_g = box_g + excluded.box_g",
                   (row["marketplace"], row["package_type"], row["status"], row["model_version"] or "", sign,
                    sign * (packaging or 0.0), sign * (box or 0.0)))

    @staticmethod
    def _record_totals(db: sqlite3.Connection, at_ms: int | None) -> None:
        """The running totals as of `at_ms` (None: the latest minute recorded), once per decision after its
        counts moved: the weight-saved chart is their last value per bucket."""
        if at_ms is None:
            latest = db.execute("SELECT MAX(minute) FROM saved_series").fetchone()[0]
            if latest is None:
                return
            at_ms = latest * MINUTE_MS
        totals = db.execute("SELECT TOTAL(packaging_g), TOTAL(box_g), TOTAL(products) FROM decision_counts").fetchone()
        db.execute("INSERT INTO saved_series VALUES (?, ?, ?, ?) ON CONFLICT (minute) DO UPDATE SET "
                   "packaging_g = excluded.packaging_g, box_g = excluded.box_g, products = excluded.products",
                   (at_ms // MINUTE_MS, totals[0], totals[1], int(totals[2])))

    def _on_decision(self, db: sqlite3.Connection, r: Mapping[str, Any]) -> None:
        product = r["product_id"]
        decided_at = millis(r["decided_at"])
        evidence = json.dumps(r.get("evidence") or [], separators=(",", ":"))
        previous = db.execute("SELECT * FROM decisions WHERE product_id = ?", (product,)).fetchone()
        db.execute("INSERT OR IGNORE INTO decision_history VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (product, decided_at, r["event_id"], r["package_type"], r["status"], r["reason"],
                    r.get("model_version"), int(bool(r.get("provisional"))), r["target_damage_rate"], evidence))
        self._reconsider_shipments(db, product, r["package_type"], decided_at, r["status"] == "auto_certified")
        if previous is not None and (previous["decided_at"], 0) > (decided_at, 1):
            return  # an older decision read late (topics are read in no set order): history only
        row = {"product_id": product, "marketplace": r["marketplace"], "package_type": r["package_type"],
               "status": r["status"], "reason": r["reason"], "model_version": r.get("model_version"),
               "decided_at": decided_at, "provisional": int(bool(r.get("provisional"))),
               "target": r["target_damage_rate"], "packaging_g": r.get("packaging_weight_g"),
               "box_g": r.get("all_box_weight_g")}  # the evidence is kept once, in the history
        if previous is not None:
            self._count_decision(db, previous, -1)
        db.execute("INSERT OR REPLACE INTO decisions VALUES (:product_id, :marketplace, :package_type, :status, "
                   ":reason, :model_version, :decided_at, :provisional, :target, :packaging_g, :box_g)",
                   row)
        self._count_decision(db, row, +1)
        self._record_totals(db, decided_at)
        db.execute("DELETE FROM decision_history WHERE product_id = ? AND decided_at < (SELECT decided_at FROM "
                   "decision_history WHERE product_id = ? ORDER BY decided_at DESC LIMIT 1 OFFSET ?)",
                   (product, product, HISTORY_KEPT - 1))
        # Shipping in the tested type (or a lighter one) means the test is moot or passed. (`+status`: by the
        # primary key, never by the queue's index on status, which would scan every open request.)
        for test in db.execute("SELECT package_type FROM tests WHERE product_id = ? AND +status = ? AND NOT lifecycle",
                               (product, OPEN)).fetchall():
            if _lighter_or_same(r["package_type"], test["package_type"]):
                self._close_test(db, product, test["package_type"], "withdrawn", decided_at)

    def _forget(self, db: sqlite3.Connection, product: str | None) -> None:
        if product is None:
            return
        previous = db.execute("SELECT * FROM decisions WHERE product_id = ?", (product,)).fetchone()
        if previous is not None:
            self._count_decision(db, previous, -1)
            self._record_totals(db, None)  # a tombstone has no time of its own: the latest bucket shows it
            db.execute("DELETE FROM decisions WHERE product_id = ?", (product,))
        for test in db.execute("SELECT package_type FROM tests WHERE product_id = ? AND +status = ?",
                               (product, OPEN)).fetchall():
            self._close_test(db, product, test["package_type"], "withdrawn", None)
        self._bump_meta(db, "deleted")

    def _on_trigger(self, db: sqlite3.Connection, r: Mapping[str, Any]) -> None:
        at = millis(r["triggered_at"])
        inserted = db.execute(
            "INSERT OR IGNORE INTO triggers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (r["event_id"], r["product_id"], r["marketplace"], r["from_package_type"], r["to_package_type"],
             r["cause"], r["reason"], r["shipments"], r["damages"], r["damage_rate_lower"], r["damage_rate_upper"],
             r.get("model_version"), at)).rowcount
        if inserted:  # a re-published trigger carries the same id: counted once
            db.execute("INSERT INTO trigger_minutes VALUES (?, ?, 1) ON CONFLICT DO UPDATE SET triggers = triggers + 1",
                       (at // MINUTE_MS, r["cause"]))

    def _count_test(self, db: sqlite3.Connection, marketplace: str, sign: int, grams: float) -> None:
        db.execute("INSERT INTO test_counts VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET open = open + excluded.open, "
                   "grams = grams + excluded.grams", (marketplace, sign, sign * grams))

    def _close_test(self, db: sqlite3.Connection, product: str, package_type: str, status: str,
                    at: int | None) -> None:
        row = db.execute("SELECT marketplace, weight_saved_g, status FROM tests WHERE product_id = ? AND "
                         "package_type = ?", (product, package_type)).fetchone()
        if row is None or row["status"] != OPEN:
            return
        db.execute("UPDATE tests SET status = ?, closed_at = ? WHERE product_id = ? AND package_type = ?",
                   (status, at, product, package_type))
        self._count_test(db, row["marketplace"], -1, row["weight_saved_g"])

    def _on_test_request(self, db: sqlite3.Connection, r: Mapping[str, Any]) -> None:
        product, tested = r["product_id"], r["package_type"]
        at = millis(r["requested_at"])
        status = r.get("status") or OPEN
        if status != OPEN:
            self._close_test(db, product, tested, status, millis(r.get("closed_at")) or at)
            return
        lifecycle = r.get("request_id") is not None  # the worker closes it explicitly
        decided = db.execute("SELECT package_type FROM decisions WHERE product_id = ?", (product,)).fetchone()
        moot = not lifecycle and decided is not None and _lighter_or_same(decided["package_type"], tested)
        existing = db.execute("SELECT status FROM tests WHERE product_id = ? AND package_type = ?",
                              (product, tested)).fetchone()
        if existing is not None and existing["status"] == OPEN:
            self._count_test(db, r["marketplace"], -1, db.execute(
                "SELECT weight_saved_g FROM tests WHERE product_id = ? AND package_type = ?",
                (product, tested)).fetchone()[0])
        db.execute("INSERT OR REPLACE INTO tests VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (product, tested, r["marketplace"], r["current_package_type"], r["weight_saved_g"],
                    r.get("model_probability"), r.get("model_version"), at, r.get("request_id") or r["event_id"],
                    "withdrawn" if moot else OPEN, at if moot else None, int(lifecycle)))
        if not moot:
            self._count_test(db, r["marketplace"], +1, r["weight_saved_g"])

    def _on_test_result(self, db: sqlite3.Connection, r: Mapping[str, Any]) -> None:
        db.execute("INSERT OR IGNORE INTO test_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (r["event_id"], r["product_id"], r["package_type"], r.get("protocol"), r.get("samples_tested"),
                    r.get("samples_passed"), ",".join(r.get("failure_codes") or []), r.get("lab"),
                    millis(r.get("tested_at")), r.get("request_id")))
        self._close_test(db, r["product_id"], r["package_type"], "answered", millis(r.get("tested_at")))

    # The certified cohort: a shipment counts under the latest decision in its package type decided before it
    # (the warehouse may ship in the old type for a moment after a decision moved the product), when that
    # decision was auto-certified; the damage reports of counted shipments are its damages. Topics are read in
    # no set order, so each side waits for the other: a shipment is judged on arrival against the decisions
    # known, and judged again when a decision arrives that it was made under; a report counts when its
    # shipment does, whichever came first.

    @staticmethod
    def _reports_of(db: sqlite3.Connection, shipment_id: str) -> int:
        return db.execute("SELECT COUNT(*) FROM reports WHERE shipment_id = ?", (shipment_id,)).fetchone()[0]

    def _count_cohort(self, db: sqlite3.Connection, marketplace: str, package_type: str, shipment_id: str,
                      sign: int) -> None:
        damages = self._reports_of(db, shipment_id)
        db.execute("INSERT INTO cohort VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET shipments = shipments + "
                   "excluded.shipments, damages = damages + excluded.damages",
                   (marketplace, package_type, sign, sign * damages))

    def _reconsider_shipments(self, db: sqlite3.Connection, product: str, package_type: str, decided_at: int,
                              certified: bool) -> None:
        """A decision in `package_type` decided at `decided_at` governs that type's shipments from then until
        the next decision in the same type."""
        following = db.execute("SELECT MIN(decided_at) FROM decision_history WHERE product_id = ? AND package_type "
                               "= ? AND decided_at > ?", (product, package_type, decided_at)).fetchone()[0]
        for s in db.execute("SELECT event_id, shipment_id, marketplace, certified FROM shipments WHERE product_id = ? "
                            "AND package_type = ? AND shipped_at >= ? AND shipped_at < ?",
                            (product, package_type, decided_at, following if following is not None else 2 ** 62)
                            ).fetchall():
            if bool(s["certified"]) != certified:
                db.execute("UPDATE shipments SET certified = ? WHERE event_id = ?", (int(certified), s["event_id"]))
                self._count_cohort(db, s["marketplace"], package_type, s["shipment_id"], 1 if certified else -1)

    def _on_shipment(self, db: sqlite3.Connection, r: Mapping[str, Any]) -> None:
        product, pack, shipped_at = r["product_id"], r["package_type"], millis(r["shipped_at"])
        under = db.execute("SELECT status FROM decision_history WHERE product_id = ? AND package_type = ? AND "
                           "decided_at <= ? ORDER BY decided_at DESC LIMIT 1", (product, pack, shipped_at)).fetchone()
        certified = under is not None and under["status"] == "auto_certified"
        if not db.execute("INSERT OR IGNORE INTO shipments VALUES (?, ?, ?, ?, ?, ?, ?)",
                          (r["event_id"], r["shipment_id"], product, pack, r["marketplace"], shipped_at,
                           int(certified))).rowcount:
            return  # sent twice: counted once
        db.execute("INSERT OR REPLACE INTO sites VALUES (?, ?)", (product, r["fulfillment_center"]))
        db.execute("INSERT OR IGNORE INTO site_names VALUES (?)", (r["fulfillment_center"],))
        if certified:
            self._count_cohort(db, r["marketplace"], pack, r["shipment_id"], +1)

    def _on_damage_report(self, db: sqlite3.Connection, r: Mapping[str, Any]) -> None:
        if not db.execute("INSERT OR IGNORE INTO reports VALUES (?, ?)", (r["event_id"], r["shipment_id"])).rowcount:
            return
        for s in db.execute("SELECT marketplace, package_type FROM shipments WHERE shipment_id = ? AND certified = 1",
                            (r["shipment_id"],)).fetchall():
            db.execute("UPDATE cohort SET damages = damages + 1 WHERE marketplace = ? AND package_type = ?",
                       (s["marketplace"], s["package_type"]))

    def _on_dead_letter(self, db: sqlite3.Connection, topic: str, partition: int, offset: int,
                        r: Mapping[str, Any]) -> None:
        code = reason_code(r["reason"])
        value = r.get("original_value")
        kept = value if value is not None and len(value) <= DEAD_LETTER_BYTES_KEPT else None
        inserted = db.execute(
            "INSERT OR IGNORE INTO dead_letters VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
            (topic, partition, offset, r["topic"], code, r["reason"], r["error_type"], millis(r["failed_at"]),
             r["partition"], r["offset"], r.get("original_key"), kept,
             r.get("original_size") if r.get("original_size") is not None else (len(value) if value else None),
             r.get("original_sha256"))).rowcount
        if inserted:
            db.execute("INSERT INTO dead_letter_counts VALUES (?, ?, 1) ON CONFLICT DO UPDATE SET "
                       "dead_letters = dead_letters + 1", (r["topic"], code))

    # -- replay bookkeeping ---------------------------------------------------------------------------

    def record_dead_letter(self, m: Folded) -> None:
        """A dead letter read out of turn (by a replay): kept and counted now, so the reader, reaching it
        later, finds it there and counts it no second time. Offsets are left to the reader."""
        db = self.read
        db.execute("BEGIN IMMEDIATE")
        try:
            self._on_dead_letter(db, m.topic, m.partition, m.offset, m.record)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def claim_replay(self, dlq_topic: str, partition: int, offset: int, now_ms: int) -> bool:
        """Mark a dead letter as being replayed; False when it was replayed (or claimed) before."""
        return bool(self.read.execute(
            "UPDATE dead_letters SET replay_state = 'sending', replayed_at = ? WHERE dlq_topic = ? AND "
            "partition = ? AND offset = ? AND replay_state IS NULL", (now_ms, dlq_topic, partition, offset)).rowcount)

    def finish_replay(self, dlq_topic: str, partition: int, offset: int, state: str) -> None:
        self.read.execute("UPDATE dead_letters SET replay_state = ? WHERE dlq_topic = ? AND partition = ? AND offset = ?",
                   (state, dlq_topic, partition, offset))

    # -- queries --------------------------------------------------------------------------------------

    def decision_counts(self) -> list[sqlite3.Row]:
        return self.read.execute(
            "SELECT marketplace, package_type, status, SUM(products) AS products, TOTAL(packaging_g) AS packaging_g, "
            "TOTAL(box_g) AS box_g FROM decision_counts GROUP BY marketplace, package_type, status "
            "HAVING SUM(products) > 0").fetchall()

    def model_versions(self) -> list[sqlite3.Row]:
        return self.read.execute(
            "SELECT model_version, SUM(products) AS products FROM decision_counts GROUP BY model_version "
            "HAVING SUM(products) > 0 ORDER BY products DESC").fetchall()

    def _bucket_minutes(self, table: str) -> int:
        """Minutes per chart bucket: minutes for a short history, hours beyond six of them."""
        first, last = self.read.execute(f"SELECT MIN(minute), MAX(minute) FROM {table}").fetchone()
        return 1 if first is None or last - first <= 360 else 60

    def saved_series(self, buckets: int = 24 * 14) -> list[tuple[int, float, float]]:
        """(bucket start in epoch seconds, packaging g, all-box g): the running totals as of each bucket's end."""
        size = self._bucket_minutes("saved_series")
        rows = self.read.execute(
            "SELECT minute / ? AS bucket, packaging_g, box_g FROM saved_series WHERE minute IN (SELECT MAX(minute) "
            "FROM saved_series GROUP BY minute / ?) ORDER BY bucket DESC LIMIT ?", (size, size, buckets)).fetchall()
        return [(r["bucket"] * size * 60, r["packaging_g"], r["box_g"]) for r in reversed(rows)]

    def trigger_series(self, buckets: int = 48) -> tuple[list[int], dict[str, list[int]]]:
        """(bucket starts in epoch seconds, triggers per bucket by cause) for the latest `buckets` buckets."""
        size = self._bucket_minutes("trigger_minutes")
        latest = self.read.execute("SELECT MAX(minute) FROM trigger_minutes").fetchone()[0]
        if latest is None:
            return [], {}
        last = latest // size
        first = max(last - buckets + 1, self.read.execute("SELECT MIN(minute) FROM trigger_minutes").fetchone()[0] // size)
        counts = {(r[0], r[1]): r[2] for r in self.read.execute(
            "SELECT minute / ?, cause, SUM(triggers) FROM trigger_minutes WHERE minute >= ? GROUP BY 1, 2",
            (size, first * size))}
        causes = sorted({cause for _, cause in counts})
        span = list(range(first, last + 1))
        return [b * size * 60 for b in span], {c: [counts.get((b, c), 0) for b in span] for c in causes}

    def cohort(self) -> list[sqlite3.Row]:
        return self.read.execute("SELECT * FROM cohort ORDER BY marketplace, package_type").fetchall()

    def test_totals(self) -> list[sqlite3.Row]:
        return self.read.execute("SELECT * FROM test_counts WHERE open > 0 ORDER BY marketplace").fetchall()

    def dead_letter_counts(self) -> list[sqlite3.Row]:
        return self.read.execute("SELECT * FROM dead_letter_counts ORDER BY dead_letters DESC").fetchall()

    def meta(self) -> dict[str, Any]:
        return {r["key"]: r["value"] for r in self.read.execute("SELECT key, value FROM meta")}

    def decision(self, product: str) -> sqlite3.Row | None:
        """The current decision, its evidence from the history row it was published as."""
        return self.read.execute(
            "SELECT d.*, (SELECT h.evidence FROM decision_history h WHERE h.product_id = d.product_id AND "
            "h.decided_at = d.decided_at LIMIT 1) AS evidence FROM decisions d WHERE d.product_id = ?",
            (product,)).fetchone()

    def decision_history(self, product: str) -> list[sqlite3.Row]:
        return self.read.execute("SELECT * FROM decision_history WHERE product_id = ? ORDER BY decided_at DESC",
                                 (product,)).fetchall()

    def product_triggers(self, product: str) -> list[sqlite3.Row]:
        return self.read.execute("SELECT * FROM triggers WHERE product_id = ? ORDER BY triggered_at DESC",
                                 (product,)).fetchall()

    def product_tests(self, product: str) -> list[sqlite3.Row]:
        return self.read.execute("SELECT * FROM tests WHERE product_id = ? ORDER BY requested_at DESC",
                                 (product,)).fetchall()

    def product_results(self, product: str) -> list[sqlite3.Row]:
        return self.read.execute("SELECT * FROM test_results WHERE product_id = ? ORDER BY tested_at DESC",
                                 (product,)).fetchall()

    def site(self, product: str) -> str | None:
        row = self.read.execute("SELECT site FROM sites WHERE product_id = ?", (product,)).fetchone()
        return row["site"] if row else None

    def latest_decisions(self, limit: int = 20) -> list[sqlite3.Row]:
        return self.read.execute("SELECT * FROM decisions ORDER BY decided_at DESC LIMIT ?", (limit,)).fetchall()

    def recent_triggers(self, limit: int = 20) -> list[sqlite3.Row]:
        return self.read.execute("SELECT * FROM triggers ORDER BY triggered_at DESC LIMIT ?", (limit,)).fetchall()

    def search_products(self, prefix: str, limit: int = 20) -> list[str]:
        return [r[0] for r in self.read.execute(
            "SELECT product_id FROM decisions WHERE product_id >= ? AND product_id < ? ORDER BY product_id LIMIT ?",
            (prefix, prefix + "\U0010ffff", limit))]

    def test_queue(self, marketplace: str | None = None, site: str | None = None, limit: int | None = 200,
                   offset: int = 0) -> Iterator[sqlite3.Row]:
        """Open test requests, biggest saving first; `limit` None: all of them (the CSV export)."""
        where, params = ["t.status = ?"], [OPEN]
        if marketplace:
            where.append("t.marketplace = ?")
            params.append(marketplace)
        if site:
            where.append("s.site = ?")
            params.append(site)
        sql = ("SELECT t.*, s.site FROM tests t INDEXED BY tests_queue LEFT JOIN sites s USING (product_id) WHERE "
               + " AND ".join(where) + " ORDER BY t.weight_saved_g DESC, t.requested_at")
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [limit, offset]
        return iter(self.read.execute(sql, params))

    def test_sites(self) -> list[str]:
        """The fulfillment centers products ship from (the queue's site filter)."""
        return [r[0] for r in self.read.execute("SELECT site FROM site_names ORDER BY site LIMIT 500")]

    def dead_letters(self, source_topic: str | None = None, code: str | None = None,
                     limit: int = 200) -> list[sqlite3.Row]:
        where, params = [], []
        if source_topic:
            where.append("source_topic = ?")
            params.append(source_topic)
        if code:
            where.append("reason_code = ?")
            params.append(code)
        sql = ("SELECT * FROM dead_letters" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY failed_at DESC, offset DESC LIMIT ?")
        return self.read.execute(sql, [*params, limit]).fetchall()

    def dead_letter(self, dlq_topic: str, partition: int, offset: int) -> sqlite3.Row | None:
        return self.read.execute("SELECT * FROM dead_letters WHERE dlq_topic = ? AND partition = ? AND offset = ?",
                                 (dlq_topic, partition, offset)).fetchone()


def evidence_rows(evidence_json: str) -> list[dict[str, Any]]:
    """A decision's evidence, lightest type first, as stored."""
    rows = json.loads(evidence_json or "[]")
    order = {p.value: p.index for p in PACK_TYPES}
    return sorted(rows, key=lambda e: order.get(e.get("package_type"), 99))
