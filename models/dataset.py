"""The labelled training table, built from the landed topics with point-in-time joins (DuckDB), and its card.

One row per shipment (each event id once), with
- the catalog record as of ship time: the latest update at or before `shipped_at` (ASOF JOIN), never a later one;
- the latest tunnel capture at or before `shipped_at` (measurements, and `capture_event_id`, by which the
  capture's views are read from landed/tunnel-captures: the images stay out of a table with a row per unit);
- the label: damage reports for that shipment, by shipment id, else by product and package type (the latest
  shipment of that product in that type at or before the report), reported within the attribution window of
  the ship time. Whatever order the events arrived in, the join sees them all;
- how its package type was chosen (`choice`, and the decision in force: the product's latest decision in the
  type shipped, decided at or before `shipped_at`): `before_packwise`, `off_decision`, or that decision's
  `chosen_by` (UNSELECTED below lists the choices the model's score did not pick).

One row per physical test result (each event id once), with the same point-in-time joins as of `tested_at`
(the catalog record and the latest capture at or before it) and `passed`: every sample tested came through
(samples_passed == samples_tested, the worker's rule). A result is its own label, so none is held back as
immature; only a result after an explicit as_of is left out (it was not known then).

A shipment younger than the window (shipped after as_of - window) is not a label yet: its report may still come.
It is held back, so a row's label never changes once it is in the table. as_of is the latest event time landed
(not the clock, so building twice gives the same table), or what the caller says.

Files, next to the landed topics (streams/landing.py):
    table/labelled.parquet       the table, ordered by shipped_at, shipment event id
    table/test_results.parquet   the test results, ordered by tested_at, test result event id
    card.json, CARD.md           what it holds: rows, positives per type, marketplace and language, time range,
                                 duplicates dropped, rows held back as immature, dead letters skipped; test
                                 results passed and failed per type and marketplace
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.errors import PackwiseError

if TYPE_CHECKING:  # imported where used: every `packwise` command loads this module to register its parser
    import duckdb
    import pyarrow as pa

TABLE = Path("table") / "labelled.parquet"
TEST_RESULTS_TABLE = Path("table") / "test_results.parquet"
CARD_JSON = "card.json"
CARD_MD = "CARD.md"
DEFAULT_WINDOW_DAYS = 30.0
# The contracts' event time, per landed topic
EVENT_TIME = {"catalog-updates": "updated_at", "tunnel-captures": "captured_at", "shipments": "shipped_at",
              "damage-reports": "reported_at", "test-results": "tested_at", "pack-type-decisions": "decided_at"}
# How a shipment's package type was chosen (the `choice` column): `before_packwise` when the product had no decision
# yet (a legacy policy chose), `off_decision` when it had decisions but none in the type it shipped in (someone
# else chose), else the `chosen_by` of the decision in force in that type. The outcomes of the UNSELECTED choices
# were not picked by the model's score: only they may certify (models/REPORT.md, "Honest evidence").
UNSELECTED = ("before_packwise", "audit", "provisional")
DECISION_COLUMNS = ("event_id", "product_id", "package_type", "status", "chosen_by", "audit_propensity",
                    "model_version", "decided_at", "kafka_timestamp", "kafka_partition", "kafka_offset")
CATALOG_COLUMNS = ("locale", "title", "description", "bullet_points", "category", "price", "currency",
                   "item_length_mm", "item_width_mm", "item_height_mm", "item_weight_g")
CAPTURE_COLUMNS = ("measured_length_mm", "measured_width_mm", "measured_height_mm", "measured_weight_g")


@dataclass(frozen=True)
class TableConfig:
    window: timedelta = timedelta(days=DEFAULT_WINDOW_DAYS)  # attribution window, and the age a label needs
    as_of: datetime | None = None  # None: the latest event time landed
    threads: int | None = None  # DuckDB threads (None: its default, one per core)
    memory_limit: str | None = None  # e.g. "2GB"; DuckDB spills to disk beyond it


def _sources(con: duckdb.DuckDBPyConnection, files: dict[str, list[Path]], schemas: dict[str, pa.Schema]) -> None:
    """One view per landed topic, named after it (underscores), over exactly the files given."""
    for base, paths in files.items():
        name = "raw_" + base.replace("-", "_")
        if paths:
            listed = ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths)
            # union_by_name: files written under an older contract version lack its newer (defaulted) fields
            con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet([{listed}], "
                        "hive_partitioning = false, union_by_name = true)")
        else:
            con.register(name + "_empty", schemas[base].empty_table())
            con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {name}_empty")


def build_table(files: dict[str, list[Path]], schemas: dict[str, pa.Schema], out: Path,
                config: TableConfig = TableConfig(), test_results_out: Path | None = None) -> dict[str, Any]:
    """Write the labelled table to `out` and the test results to `test_results_out` (default: beside `out`,
    test_results.parquet), each atomically, and return their statistics (the card's numbers)."""
    import duckdb

    con = duckdb.connect()
    try:
        if config.threads:
            con.execute(f"SET threads = {int(config.threads)}")
        if config.memory_limit:
            con.execute(f"SET memory_limit = '{config.memory_limit}'")
        con.execute("SET TimeZone = 'UTC'")
        _sources(con, files, schemas)
        return _build(con, out, test_results_out or out.with_name(TEST_RESULTS_TABLE.name), config)
    finally:
        con.close()


def _dedup(con: duckdb.DuckDBPyConnection, base: str, columns: str = "*") -> tuple[int, int]:
    """A table of the topic's events, each event id once (the first written: the worker counts the first too);
    returns (events read, duplicates dropped)."""
    raw, name = "raw_" + base.replace("-", "_"), base.replace("-", "_")
    con.execute(f"CREATE TEMP TABLE {name} AS SELECT {columns} FROM {raw} QUALIFY row_number() OVER "
                "(PARTITION BY event_id ORDER BY kafka_timestamp, kafka_partition, kafka_offset) = 1")
    read = con.execute(f"SELECT count(*) FROM {raw}").fetchone()[0]
    kept = con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
    return read, read - kept


def _copy_atomically(con: duckdb.DuckDBPyConnection, query: str, out: Path) -> None:
    """COPY the query's rows to `out` as Parquet: a temporary file, fsynced, then renamed over `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    path = str(tmp).replace("'", "''")
    con.execute(f"COPY ({query}) TO '{path}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 122880)")
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, out)


def _build(con: duckdb.DuckDBPyConnection, out: Path, test_results_out: Path, config: TableConfig) -> dict[str, Any]:
    duplicates, read = {}, {}
    for base in EVENT_TIME:
        columns = "*"
        if base == "tunnel-captures":  # the views stay in the landed files (read by capture_event_id)
            columns = ", ".join(("event_id", "product_id", "captured_at", "kafka_timestamp", "kafka_partition",
                                 "kafka_offset") + CAPTURE_COLUMNS)
        elif base == "pack-type-decisions":  # how the type was chosen, not the evidence behind it
            columns = ", ".join(DECISION_COLUMNS)
        read[base], duplicates[base] = _dedup(con, base, columns)

    as_of = config.as_of
    if as_of is None:
        latest = con.execute("SELECT greatest(" + ", ".join(
            f"(SELECT max({column}) FROM {base.replace('-', '_')})" for base, column in EVENT_TIME.items())
            + ")").fetchone()[0]
        as_of = latest or datetime(1970, 1, 1, tzinfo=timezone.utc)
    window_s = config.window.total_seconds()
    params = {"window_s": window_s, "mature_before": as_of - config.window}

    # Two updates of one product stamped the same millisecond: the later written wins, so the as-of match is
    # one record, the same in every build.
    con.execute("CREATE TEMP TABLE catalog AS SELECT * FROM catalog_updates QUALIFY row_number() OVER "
                "(PARTITION BY product_id, updated_at ORDER BY kafka_timestamp DESC, kafka_offset DESC) = 1")
    con.execute("CREATE TEMP TABLE captures AS SELECT * FROM tunnel_captures QUALIFY row_number() OVER "
                "(PARTITION BY product_id, captured_at ORDER BY kafka_timestamp DESC, kafka_offset DESC) = 1")
    con.execute("CREATE TEMP TABLE decisions AS SELECT * FROM pack_type_decisions QUALIFY row_number() OVER "
                "(PARTITION BY product_id, decided_at ORDER BY kafka_timestamp DESC, kafka_offset DESC) = 1")
    # Labels: a report names its shipment, or is attributed to the product's latest shipment in that package
    # type at or before it; either way it counts only within the window of the ship time (so a row that is
    # mature keeps its label for good).
    con.execute("""
        CREATE TEMP TABLE attributed AS
        WITH by_id AS (
            SELECT r.event_id AS report_id, s.event_id AS shipment_event_id, s.shipped_at, r.reported_at
            FROM damage_reports r JOIN shipments s ON r.shipment_id = s.shipment_id AND r.product_id = s.product_id
        ), unnamed AS (
            SELECT r.* FROM damage_reports r ANTI JOIN by_id b ON r.event_id = b.report_id
        ), by_window AS (
            SELECT r.event_id AS report_id, s.event_id AS shipment_event_id, s.shipped_at, r.reported_at
            FROM unnamed r ASOF JOIN shipments s
              ON r.product_id = s.product_id AND r.package_type = s.package_type AND s.shipped_at <= r.reported_at
        )
        SELECT * FROM (SELECT *, 'shipment_id' AS matched_by FROM by_id
                       UNION ALL SELECT *, 'product_and_type' AS matched_by FROM by_window)
        WHERE epoch_ms(reported_at) - epoch_ms(shipped_at) <= $window_s * 1000
    """, {"window_s": window_s})
    con.execute("""
        CREATE TEMP TABLE labels AS
        SELECT shipment_event_id, count(*) AS damage_reports,
               bool_or(matched_by = 'shipment_id') AS matched_by_shipment_id, min(reported_at) AS first_reported_at
        FROM attributed GROUP BY shipment_event_id
    """)
    catalog = ", ".join(f"c.{column}" for column in CATALOG_COLUMNS)
    capture = ", ".join(f"k.{column}" for column in CAPTURE_COLUMNS)
    con.execute(f"""
        CREATE TEMP TABLE labelled AS
        SELECT s.event_id AS shipment_event_id, s.shipment_id, s.product_id, s.package_type, s.marketplace,
               s.fulfillment_center, s.shipped_at,
               c.event_id AS catalog_event_id, c.updated_at AS catalog_updated_at, {catalog},
               k.event_id AS capture_event_id, k.captured_at, {capture},
               coalesce(l.damage_reports, 0) AS damage_reports, coalesce(l.damage_reports, 0) > 0 AS damaged,
               l.first_reported_at,
               CASE WHEN a.event_id IS NULL THEN 'before_packwise' WHEN d.event_id IS NULL THEN 'off_decision'
                    ELSE d.chosen_by END AS choice,
               d.event_id AS decision_event_id, d.decided_at, d.status AS decision_status, d.chosen_by,
               d.audit_propensity, d.model_version AS decision_model_version
        FROM shipments s
        ASOF LEFT JOIN catalog c ON s.product_id = c.product_id AND c.updated_at <= s.shipped_at
        ASOF LEFT JOIN captures k ON s.product_id = k.product_id AND k.captured_at <= s.shipped_at
        ASOF LEFT JOIN decisions d
          ON s.product_id = d.product_id AND s.package_type = d.package_type AND d.decided_at <= s.shipped_at
        ASOF LEFT JOIN decisions a ON s.product_id = a.product_id AND a.decided_at <= s.shipped_at
        LEFT JOIN labels l ON l.shipment_event_id = s.event_id
        WHERE s.shipped_at <= $mature_before
    """, {"mature_before": params["mature_before"]})

    _copy_atomically(con, "SELECT * FROM labelled ORDER BY shipped_at, shipment_event_id", out)
    # Physical test results, each its own label, with what was known of the product when it was tested
    con.execute(f"""
        CREATE TEMP TABLE tested AS
        SELECT t.event_id AS test_result_event_id, t.product_id, t.marketplace, t.package_type, t.protocol,
               t.samples_tested, t.samples_passed, t.failure_codes, t.lab, t.tested_at, t.request_id,
               t.samples_passed = t.samples_tested AS passed,
               c.event_id AS catalog_event_id, c.updated_at AS catalog_updated_at, {catalog},
               k.event_id AS capture_event_id, k.captured_at, {capture}
        FROM test_results t
        ASOF LEFT JOIN catalog c ON t.product_id = c.product_id AND c.updated_at <= t.tested_at
        ASOF LEFT JOIN captures k ON t.product_id = k.product_id AND k.captured_at <= t.tested_at
        WHERE t.tested_at <= $as_of
    """, {"as_of": as_of})
    _copy_atomically(con, "SELECT * FROM tested ORDER BY tested_at, test_result_event_id", test_results_out)

    def grouped(column: str) -> dict[str, dict[str, int]]:
        rows = con.execute(f"SELECT coalesce(CAST({column} AS VARCHAR), 'unknown') AS k, count(*), "
                           f"count(*) FILTER (WHERE damaged) FROM labelled GROUP BY k ORDER BY k").fetchall()
        return {key: {"rows": rows_, "positives": positives} for key, rows_, positives in rows}

    rows, positives, first, last, no_catalog, no_capture = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE damaged), min(shipped_at), max(shipped_at), "
        "count(*) FILTER (WHERE catalog_event_id IS NULL), count(*) FILTER (WHERE capture_event_id IS NULL) "
        "FROM labelled").fetchone()
    immature = con.execute("SELECT count(*) FROM shipments WHERE shipped_at > $m",
                           {"m": params["mature_before"]}).fetchone()[0]
    unattributed = con.execute("SELECT count(*) FROM damage_reports WHERE event_id NOT IN "
                               "(SELECT report_id FROM attributed)").fetchone()[0]
    by_match = dict(con.execute("SELECT matched_by, count(*) FROM attributed GROUP BY 1").fetchall())

    def iso(value: datetime | None) -> str | None:
        return value.astimezone(timezone.utc).isoformat() if value is not None else None

    def outcomes(column: str) -> dict[str, dict[str, int]]:
        rows = con.execute(f"SELECT coalesce(CAST({column} AS VARCHAR), 'unknown') AS k, count(*), "
                           f"count(*) FILTER (WHERE passed) FROM tested GROUP BY k ORDER BY k").fetchall()
        return {key: {"rows": n, "passed": passed, "failed": n - passed} for key, n, passed in rows}

    tests, tests_passed, first_tested, last_tested, tests_no_catalog, tests_no_capture = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE passed), min(tested_at), max(tested_at), "
        "count(*) FILTER (WHERE catalog_event_id IS NULL), count(*) FILTER (WHERE capture_event_id IS NULL) "
        "FROM tested").fetchone()
    tests_after = con.execute("SELECT count(*) FROM test_results WHERE tested_at > $a", {"a": as_of}).fetchone()[0]

    return {
        "rows": rows, "positives": positives,
        "positives_by": {"package_type": grouped("package_type"), "marketplace": grouped("marketplace"),
                         "language": grouped("locale"), "choice": grouped("choice")},
        "time_range": {"first_shipped_at": iso(first), "last_shipped_at": iso(last)},
        "as_of": iso(as_of), "window_days": window_s / 86400, "mature_before": iso(params["mature_before"]),
        "held_back_immature": immature,
        "events_read": read, "duplicates_dropped": duplicates,
        "damage_reports": {"attributed_by_shipment_id": by_match.get("shipment_id", 0),
                           "attributed_by_product_and_type": by_match.get("product_and_type", 0),
                           "unattributed": unattributed},
        "rows_without_catalog": no_catalog, "rows_without_capture": no_capture,
        "test_results": {
            "rows": tests, "passed": tests_passed, "failed": tests - tests_passed,
            "by": {"package_type": outcomes("package_type"), "marketplace": outcomes("marketplace")},
            "time_range": {"first_tested_at": iso(first_tested), "last_tested_at": iso(last_tested)},
            "after_as_of": tests_after, "rows_without_catalog": tests_no_catalog,
            "rows_without_capture": tests_no_capture},
    }


# -- the card --------------------------------------------------------------------------------------------


def card(stats: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """The dataset card: the table's numbers, and what the landing skipped, with a fingerprint of the inputs
    (the offsets landed and the labelling parameters) that a bundle can record."""
    dead = {base: sum(reasons.values()) for base, reasons in manifest.get("dead_letters", {}).items()}
    fingerprint = hashlib.sha256(json.dumps(
        {"offsets": manifest["offsets"], "as_of": stats["as_of"], "window_days": stats["window_days"]},
        sort_keys=True).encode()).hexdigest()[:16]
    return {**stats, "dead_letters_skipped": dead, "dead_letter_reasons": manifest.get("dead_letters", {}),
            "tombstones": manifest.get("tombstones", 0),
            "lost_to_retention": manifest.get("lost_to_retention", {}),
            "topic_prefix": manifest["topic_prefix"], "offsets": manifest["offsets"], "fingerprint": fingerprint,
            "table": TABLE.as_posix(), "test_results_table": TEST_RESULTS_TABLE.as_posix()}


def card_markdown(data: dict[str, Any]) -> str:
    def rate(entry: dict[str, int]) -> str:
        return f"{entry['positives']:,} / {entry['rows']:,}" + (
            f" ({entry['positives'] / entry['rows']:.2%})" if entry["rows"] else "")

    tests = data["test_results"]
    lines = [f"# Dataset card ({data['fingerprint']})", "",
             f"- rows (mature shipments): {data['rows']:,}; damaged: {data['positives']:,}",
             f"- shipped from {data['time_range']['first_shipped_at']} to {data['time_range']['last_shipped_at']}",
             f"- labels as of {data['as_of']}, attribution window {data['window_days']:g} days: "
             f"{data['held_back_immature']:,} shipments after {data['mature_before']} held back as immature",
             "- duplicates dropped (resent event ids): " + ", ".join(
                 f"{base} {n:,}" for base, n in data["duplicates_dropped"].items()),
             "- dead letters skipped: " + (", ".join(f"{base} {n:,}" for base, n in data["dead_letters_skipped"].items())
                                           or "none"),
             f"- damage reports: {data['damage_reports']['attributed_by_shipment_id']:,} by shipment id, "
             f"{data['damage_reports']['attributed_by_product_and_type']:,} by product and type, "
             f"{data['damage_reports']['unattributed']:,} unattributed (no shipment within the window)",
             f"- rows without a catalog record as of ship time: {data['rows_without_catalog']:,}; "
             f"without a capture: {data['rows_without_capture']:,}",
             f"- physical test results: {tests['rows']:,} rows, {tests['passed']:,} passed, "
             f"{tests['failed']:,} failed, tested from {tests['time_range']['first_tested_at']} to "
             f"{tests['time_range']['last_tested_at']} ({tests['after_as_of']:,} after the as-of time left out; "
             f"{tests['rows_without_catalog']:,} without a catalog record as of test time, "
             f"{tests['rows_without_capture']:,} without a capture)", ""]
    for title, key in (("package type", "package_type"), ("marketplace", "marketplace"),
                       ("language (catalog locale)", "language"), ("choice of package type", "choice")):
        if key not in data["positives_by"]:  # a card written before the choice was joined
            continue
        lines += [f"## Positives per {title}", "", f"| {title} | damaged / rows |", "|---|---|"]
        lines += [f"| {name} | {rate(entry)} |" for name, entry in data["positives_by"][key].items()] + [""]
    if "choice" in data["positives_by"]:
        lines += [f"Choices that may certify (not picked by the model's score): {', '.join(UNSELECTED)}.", ""]
    for title, key in (("package type", "package_type"), ("marketplace", "marketplace")):
        lines += [f"## Test results per {title}", "", f"| {title} | passed | failed | rows |", "|---|---|---|---|"]
        lines += [f"| {name} | {entry['passed']:,} | {entry['failed']:,} | {entry['rows']:,} |"
                  for name, entry in tests["by"][key].items()] + [""]
    return "\n".join(lines)


def write_card(folder: Path, data: dict[str, Any]) -> None:
    from streams.landing import _write_atomically

    _write_atomically(folder / CARD_JSON, json.dumps(data, indent=1, sort_keys=True).encode("utf-8"))
    _write_atomically(folder / CARD_MD, card_markdown(data).encode("utf-8"))


def table_from_landed(folder: Path, config: TableConfig = TableConfig()) -> dict[str, Any]:
    """Build the table and the card from what the manifest lists in `folder`."""
    from streams.landing import LANDED, arrow_schema, landed_files, read_manifest
    from streams.serde import Serde

    serde = Serde()
    schemas = {base: arrow_schema(serde, contract) for base, contract in LANDED.items()}
    stats = build_table(landed_files(folder), schemas, folder / TABLE, config)
    data = card(stats, read_manifest(folder))
    write_card(folder, data)
    return data


# -- the command -----------------------------------------------------------------------------------------


def _as_of(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO time, e.g. 2026-11-29T00:00:00+00:00") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _days(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of days")
    return value


def _processes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number of processes, 1 or more")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    dataset = sub.add_parser(
        "dataset", help="land the input topics as Parquet and build the labelled training table",
        description="build: land every input event written since the last build (per-partition offsets in "
                    "DIR/manifest.json; dead-lettered events never land), then rebuild DIR/table/labelled.parquet "
                    "and DIR/table/test_results.parquet with point-in-time joins and write DIR/card.json and "
                    "DIR/CARD.md. Reads with its own consumer (assigned partitions, no offsets committed): the "
                    "workers' group is never touched.")
    dataset.add_argument("action", choices=["build"])
    dataset.add_argument("--out", type=Path, required=True, help="dataset folder (created; reused incrementally)")
    dataset.add_argument("--window-days", type=_days, default=DEFAULT_WINDOW_DAYS,
                         help="attribution window: a damage report counts for a shipment up to this long after it, "
                              "and younger shipments are held back as immature")
    dataset.add_argument("--as-of", type=_as_of, default=None,
                         help="time the labels are judged at (ISO; default: the latest event time landed)")
    dataset.add_argument("--no-table", action="store_true", help="only land the topics")
    dataset.add_argument("--processes", type=_processes, default=None,
                         help="landing processes, each reading its own share of the partitions (default: one per "
                              "core less one, at least 1); the manifest is written once, after all of them")
    dataset.set_defaults(handler=cmd_dataset)


def cmd_dataset(args: argparse.Namespace) -> int:
    from streams.landing import default_processes, land

    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise PackwiseError(f"--out {out} is a file: give a folder for the dataset")
    report = land(args.settings, out, show_progress=True, processes=args.processes or default_processes())
    landed = ", ".join(f"{base} {n:,}" for base, n in sorted(report.landed.items())) or "nothing new"
    skipped = sum(report.dead_letters.values())
    print(f"landed {landed} in {report.seconds:.1f} s ({report.files} files); skipped {skipped:,} dead-lettered "
          f"events, {report.tombstones:,} tombstones (catalog records, decisions)" +
          (f"; {sum(report.lost_to_retention.values()):,} events expired before landing" if report.lost_to_retention
           else ""))
    if args.no_table:
        return 0
    started = time.perf_counter()
    data = table_from_landed(out, TableConfig(window=timedelta(days=args.window_days), as_of=args.as_of))
    print(f"table: {data['rows']:,} rows, {data['positives']:,} damaged, {data['held_back_immature']:,} held back "
          f"as immature, {sum(data['duplicates_dropped'].values()):,} duplicates dropped "
          f"({time.perf_counter() - started:.1f} s) -> {out / TABLE}; {data['test_results']['rows']:,} test results "
          f"({data['test_results']['passed']:,} passed) -> {out / TEST_RESULTS_TABLE}; card: {out / CARD_MD}")
    return 0
