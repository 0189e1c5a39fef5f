"""Training on a network's own history: the labelled table that `packwise dataset build` writes, turned into the
inputs and labels the network trains, calibrates and certifies on (models/train.py does the same from the synthetic
world, whose hidden truth and fully observed audits a real history does not have).

The split, by product and by time, reproducible from the table and the seed:

- the **recent period** is the newest RECENT_SHARE of the table's shipments by ship time; it starts at the
  `cutoff`, the ship time of the first of them (a shipment at the cutoff instant is recent);
- every product falls in one split, drawn from a hash of its id and the seed with the HISTORY_SPLITS shares:
  no product is in two;
- **train** products learn from their shipments *before* the cutoff, read as of the latest of them (the
  catalog record and capture on that row); their recent shipments are not used;
- **temperature**, **calibration** and **test** products are judged on their shipments *at or after* the
  cutoff only, read as of the first of them, so every outcome they are judged on comes at or after what the
  model read, as in production (a product is scored, then ships); their older shipments are not used;
- the temperature fit takes all recent shipments of its products (damages out of shipments, per type); the
  certification test takes, per calibration product and package type, its first recent shipment in that type
  whose type the model's score did not pick (the row's `choice` is before_packwise, audit or provisional:
  models/dataset.py; `calibrate_on="all"` takes any), damaged or not (one outcome per product, which makes the
  damage count among certified products binomial); the test slice measures the metrics card.

A product with no shipment in its split's period has nothing to learn from or be judged on, and is left out.

`packwise evaluate --data DIR` measures a bundle on a later window of a dataset (`evaluation`): the shipments
after the last one the bundle was trained on, of products that were not its training products, with the damages
observed (reported) in them.

Why only unselected rows certify (DESIGN.md invariant 7, models/REPORT.md "Honest evidence"): where the model's
own certification chose a lighter type, the products that shipped in it are those it already found safe, and
their outcomes would re-certify its blind spots. The damage label is a *reported* damage: `report_share` (TrainConfig)
turns the target on the true rate into one on the reported rate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import pyarrow as pa
import torch

from models import calibrate, evaluate, features
from models.dataset import CARD_JSON, TABLE, UNSELECTED
from models.network import NetworkConfig
from models.packtypes import PACK_TYPES
from models.tokenizer import Tokenizer, catalog_document, train_tokenizer
from models.train import FitResult, TrainConfig, predict_logits, progress, train_network, uncertified_warning
from models.world import WorldConfig

if TYPE_CHECKING:
    import duckdb

    from models.bundle import Bundle
    from streams.marketplaces import Marketplace

HISTORY_SPLITS = {"train": 0.55, "temperature": 0.10, "calibration": 0.30, "test": 0.05}
RECENT_SHARE = 1 / 3  # of the table's shipments, the newest: the period held-out products are judged on
IMAGE_SIZE = WorldConfig().image_size  # captures are resized to what the network reads, as the worker does
TEMPERATURE_RIDGE = 1e-4  # no audits: a type may see no damage in the temperature split (calibrate.fit_temperature)
MANIFEST = "manifest.json"  # streams/landing.py MANIFEST (not imported: it loads the Kafka client)
CHUNK = 512  # products whose captures are decoded at once
CATALOG_FIELDS = ("locale", "title", "description", "bullet_points", "category", "price", "currency",
                  "item_length_mm", "item_width_mm", "item_height_mm", "item_weight_g")
CAPTURE_FIELDS = ("measured_length_mm", "measured_width_mm", "measured_height_mm", "measured_weight_g")


class HistoryError(Exception):
    """A dataset folder that cannot be trained on: said in one sentence that names the folder."""


@dataclass(frozen=True)
class History:
    """The table as model inputs and labels, per product, split by product and time (module docstring)."""

    folder: Path
    card: dict[str, Any]
    tokenizer: Tokenizer
    product_ids: list[str]
    features: features.Features
    damaged: np.ndarray  # per product and type: damaged shipments in its split's period, [n, 4]
    shipments: np.ndarray  # shipments in its split's period, [n, 4]
    first_damaged: np.ndarray  # its first shipment in each type in the period: damaged 0/1, [n, 4]
    first_observed: np.ndarray  # whether it has one, bool [n, 4]
    splits: dict[str, np.ndarray]  # product indices per split
    cutoff: datetime
    periods: dict[str, tuple[datetime, datetime]]  # per split, the first and last ship time it uses
    rows: int
    calibrate_on: str = "unselected"  # which rows' outcomes may certify (CALIBRATE_ON)
    excluded: dict[str, int] = dataclasses.field(default_factory=dict)  # calibration rows left out, by choice

    @property
    def fingerprint(self) -> str:
        return self.card["fingerprint"]

    def describe(self) -> dict[str, Any]:
        """What a bundle records of the data it was trained on."""
        return {"folder": str(self.folder), "fingerprint": self.fingerprint, "card": self.card,
                "image_size": IMAGE_SIZE,
                "split": {"rule": "models/history.py: products by a hash of id and seed; train on shipments before "
                                  "the cutoff, calibrate and certify on shipments at or after it",
                          "shares": HISTORY_SPLITS, "recent_share": RECENT_SHARE, "cutoff": _iso(self.cutoff),
                          "products": {name: len(idx) for name, idx in self.splits.items()},
                          "shipments": {name: int(self.shipments[idx].sum()) for name, idx in self.splits.items()},
                          "periods": {name: [_iso(a), _iso(b)] for name, (a, b) in self.periods.items()}},
                "certified_on": {"rows": self.calibrate_on, "choices": list(UNSELECTED) if self.calibrate_on ==
                                 "unselected" else "all", "calibration_rows_left_out": self.excluded,
                                 "calibration_outcomes": {p.value: int(n) for p, n in zip(
                                     PACK_TYPES, self.first_observed[self.splits["calibration"]].sum(0))}}}


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat()


def split_of(product_id: str, seed: int) -> str:
    """The split a product falls in: a hash of its id and the seed, so the same for every build of the table."""
    u = int(hashlib.sha256(f"{seed}:{product_id}".encode()).hexdigest()[:13], 16) / 16 ** 13
    edge = 0.0
    for name, share in HISTORY_SPLITS.items():
        edge += share
        if u < edge:
            return name
    return name


def calibration_needed(target: float, delta: float, report_share: float = 1.0) -> tuple[int, int]:
    """(calibration products, products shipping in the recent period) that certifying at `target` needs at the
    very least: every calibration product certified and undamaged (on the reported rate, at target × share)."""
    needed = calibrate.zero_damage_products_needed(target * report_share, delta)
    return needed, math.ceil(needed / HISTORY_SPLITS["calibration"])


def _open(folder: Path) -> tuple["duckdb.DuckDBPyConnection", dict[str, Any]]:
    """A DuckDB connection holding the dataset's table as `t`, and its card; HistoryError when `folder` is not a
    dataset."""
    import duckdb

    folder = Path(folder)
    table = folder / TABLE
    if not all(p.is_file() for p in (folder / CARD_JSON, folder / MANIFEST, table)):
        raise HistoryError(f"{folder} is not a packwise dataset (no {TABLE.as_posix()}, {CARD_JSON} and {MANIFEST}): "
                           f"build one with `packwise dataset build --out {folder}`.")
    try:
        card = json.loads((folder / CARD_JSON).read_text(encoding="utf-8"))
        card["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise HistoryError(f"{folder / CARD_JSON} cannot be read as a dataset card ({error}): build the dataset "
                           "again.") from None
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    try:
        con.execute(f"CREATE TEMP TABLE t AS SELECT * FROM read_parquet('{str(table).replace(chr(39), chr(39) * 2)}')")
    except duckdb.Error as error:
        con.close()
        raise HistoryError(f"{table} cannot be read ({str(error).splitlines()[0]}): build the dataset again.") from None
    return con, card


@dataclass(frozen=True)
class _Outcomes:
    product_ids: list[str]
    damaged: np.ndarray
    shipments: np.ndarray
    first_damaged: np.ndarray
    first_observed: np.ndarray
    read: list[dict]  # per product, the table row it is read as of


def _outcomes(con: "duckdb.DuckDBPyConnection", certifying: str = "TRUE") -> _Outcomes:
    """Per product of the temporary table `used` (the rows of each product's period, with its `split`): damages
    and shipments per type, the first shipment per type among the rows `certifying` (an SQL condition) admits,
    and the row it is read as of: the latest (train) or the first (held out, evaluated) of its period."""
    order = [r[0] for r in con.execute("SELECT DISTINCT product_id FROM used ORDER BY 1").fetchall()]
    index = {p: i for i, p in enumerate(order)}
    types = {p.value: t for t, p in enumerate(PACK_TYPES)}
    damaged, shipments = np.zeros((len(order), len(PACK_TYPES))), np.zeros((len(order), len(PACK_TYPES)))
    for product, pack, shipped, hurt in con.execute(
            "SELECT product_id, package_type, count(*), count(*) FILTER (WHERE damaged) FROM used GROUP BY 1, 2"
    ).fetchall():
        shipments[index[product], types[pack]], damaged[index[product], types[pack]] = shipped, hurt
    first_damaged, first_observed = np.zeros_like(damaged), np.zeros_like(damaged, dtype=bool)
    for product, pack, hurt in con.execute(
            f"SELECT product_id, package_type, damaged FROM used WHERE {certifying} QUALIFY row_number() OVER "
            "(PARTITION BY product_id, package_type ORDER BY shipped_at, shipment_event_id) = 1").fetchall():
        first_damaged[index[product], types[pack]], first_observed[index[product], types[pack]] = hurt, True
    read = _records(con, f"""
        SELECT product_id, marketplace, catalog_event_id, {', '.join(CATALOG_FIELDS)}, capture_event_id,
               {', '.join(CAPTURE_FIELDS)}
        FROM used QUALIFY row_number() OVER (PARTITION BY product_id ORDER BY
            CASE WHEN split = 'train' THEN -epoch_ms(shipped_at) ELSE epoch_ms(shipped_at) END,
            shipment_event_id) = 1
        ORDER BY product_id""")
    return _Outcomes(order, damaged, shipments, first_damaged, first_observed, read)


def load_history(folder: Path, seed: int, targets: tuple[float, ...], delta: float, report_share: float = 1.0,
                 calibrate_on: str = "unselected", show_progress: bool = True) -> History:
    """The dataset in `folder` as a History; HistoryError when it is not a dataset or too small to certify at
    the loosest of `targets` (on the reported rate, at target × `report_share`)."""
    folder = Path(folder)
    loosest = max(targets)
    needed, products_needed = calibration_needed(loosest, delta, report_share)
    reported = f", {loosest * report_share:.3%} reported at a report share of {report_share:g}" \
        if report_share < 1 else ""
    short = (f"certifying at {loosest:.2%}{reported} (delta {delta:.0%}) needs at least {needed} calibration products "
             f"with a shipment in the recent period (the newest {RECENT_SHARE:.0%} of the shipments), so at least "
             f"{products_needed:,} products shipping in it and {round(products_needed / RECENT_SHARE):,} shipments "
             "in all")
    con, card = _open(folder)
    try:
        certifying = _certifying(con, folder, calibrate_on)
        rows, products = con.execute("SELECT count(*), count(DISTINCT product_id) FROM t").fetchone()
        if rows == 0:
            raise HistoryError(f"the table of {folder} has no mature shipments: {short}.")
        cutoff = con.execute("SELECT quantile_disc(shipped_at, $q) FROM t", {"q": 1 - RECENT_SHARE}).fetchone()[0]
        assigned = {r[0]: split_of(r[0], seed) for r in con.execute("SELECT DISTINCT product_id FROM t").fetchall()}
        con.register("split_of", pa.table({"product_id": list(assigned), "split": list(assigned.values())}))
        # each product's rows in its own split's period
        con.execute("""CREATE TEMP TABLE used AS SELECT t.*, s.split FROM t JOIN split_of s USING (product_id)
                       WHERE (s.split = 'train') = (t.shipped_at < $cutoff)""", {"cutoff": cutoff})
        counts = con.execute("SELECT split, count(DISTINCT product_id), min(shipped_at), max(shipped_at) FROM used "
                             "GROUP BY split").fetchall()
        found = {name: (n, first, last) for name, n, first, last in counts}
        n_cal, n_train = found.get("calibration", (0,))[0], found.get("train", (0,))[0]
        if n_cal < needed or not n_train or "temperature" not in found:
            lowest = math.ceil(calibrate.lowest_certifiable_target(n_cal, delta) / report_share * 1e4) / 1e4
            raise HistoryError(
                f"the table of {folder} is too small to certify: {rows:,} shipments of {products:,} products, "
                f"{n_cal:,} calibration products with a shipment since {_iso(cutoff)} and {n_train:,} training "
                f"products with one before; {short} (or --targets {lowest} or looser, the lowest {n_cal:,} can "
                "reach).")
        outcomes = _outcomes(con, certifying)
        excluded = dict(con.execute(f"SELECT coalesce(choice, 'unknown'), count(*) FROM used WHERE split = "
                                    f"'calibration' AND NOT ({certifying}) GROUP BY 1").fetchall())
    finally:
        con.close()
    splits = {name: np.asarray([i for i, p in enumerate(outcomes.product_ids) if assigned[p] == name],
                               dtype=np.int64) for name in HISTORY_SPLITS}
    catalogs = [_catalog(row) for row in outcomes.read]
    training_docs = [catalog_document(catalogs[i]) for i in splits["train"] if catalogs[i] is not None]
    if not training_docs:
        raise HistoryError(f"the training products of {folder} have no catalog record as of their shipments: the "
                           "model needs catalog text to learn from; land the catalog-updates topic.")
    tokenizer = Tokenizer(train_tokenizer(training_docs))
    f = _features(folder, tokenizer, outcomes.read, catalogs, show_progress)
    return History(folder, card, tokenizer, outcomes.product_ids, f, outcomes.damaged, outcomes.shipments,
                   outcomes.first_damaged, outcomes.first_observed, splits, cutoff,
                   {name: (first, last) for name, (_, first, last) in found.items()}, rows,
                   calibrate_on, {k: int(v) for k, v in sorted(excluded.items())})


CALIBRATE_ON = ("unselected", "all")


def _certifying(con: "duckdb.DuckDBPyConnection", folder: Path, calibrate_on: str) -> str:
    """The SQL condition on a table row for its outcome to certify: by default, a package type the model's score
    did not pick (models/dataset.py UNSELECTED); with "all", any row."""
    if calibrate_on == "all":
        return "TRUE"
    if calibrate_on != "unselected":
        raise HistoryError(f"calibrate on {calibrate_on!r}? one of {', '.join(CALIBRATE_ON)}")
    columns = {row[0] for row in con.execute("DESCRIBE t").fetchall()}
    if "choice" not in columns:
        raise HistoryError(f"the table of {folder} was built before datasets recorded how each package type was "
                           f"chosen: build it again (`packwise dataset build --out {folder}`), or certify on every "
                           "shipment whatever chose its type with --calibrate-on all.")
    return "choice IN (" + ", ".join(f"'{choice}'" for choice in UNSELECTED) + ")"


def _records(con: "duckdb.DuckDBPyConnection", query: str) -> list[dict]:
    cursor = con.execute(query)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def _catalog(row: dict) -> dict | None:
    """The catalog record a table row carries (its marketplace is the shipment's), or None."""
    if row["catalog_event_id"] is None:
        return None
    return {"event_id": row["catalog_event_id"], "product_id": row["product_id"], "marketplace": row["marketplace"],
            **{name: row[name] for name in CATALOG_FIELDS}}


def _features(folder: Path, tokenizer: Tokenizer, read: list[dict], catalogs: list[dict | None],
              show_progress: bool, size: int = IMAGE_SIZE) -> features.Features:
    """Model inputs per row read, the capture's views read from the landed captures by event id (in one pass over
    the landed files: the encoded views wanted take less memory than the decoded pixels they become)."""
    import duckdb

    from streams.landing import landed_files

    files = landed_files(folder)["tunnel-captures"]
    wanted = [row["capture_event_id"] for row in read if row["capture_event_id"] is not None]
    views: dict[str, list] = {}
    if wanted and files:
        listed = ", ".join("'" + str(p).replace("'", "''") + "'" for p in files)
        con = duckdb.connect()
        try:
            con.register("wanted", pa.table({"event_id": wanted}))
            views = {r["event_id"]: r["views"] for r in _records(
                con, f"SELECT event_id, views FROM read_parquet([{listed}], hive_partitioning = false, "
                "union_by_name = true) WHERE event_id IN (SELECT event_id FROM wanted) QUALIFY row_number() "
                "OVER (PARTITION BY event_id ORDER BY kafka_timestamp, kafka_partition, kafka_offset) = 1")}
        finally:
            con.close()
    chunks = []
    for start in progress(range(0, len(read), CHUNK), "decoding captures", show_progress):
        part = read[start:start + CHUNK]
        captures = [{"event_id": row["capture_event_id"], "product_id": row["product_id"],
                     "views": views.pop(row["capture_event_id"]), **{name: row[name] for name in CAPTURE_FIELDS}}
                    if row["capture_event_id"] in views else None for row in part]
        chunks.append(features.from_records(tokenizer, catalogs[start:start + CHUNK], captures, size))
    return features.concatenate(chunks)


def fit_history(history: History, net_config: NetworkConfig, config: TrainConfig,
                show_progress: bool = True) -> FitResult:
    """Train on the train split, fit the temperature on the temperature split, certify on the calibration split,
    measure on the test split (module docstring)."""
    started = time.perf_counter()
    net_config = dataclasses.replace(net_config, vocab_size=history.tokenizer.vocab_size)
    train = history.splits["train"]
    model = train_network(net_config, config, history.features.select(torch.as_tensor(train)),
                          history.damaged[train], history.shipments[train] - history.damaged[train], show_progress)
    train_seconds = time.perf_counter() - started
    logits = {name: predict_logits(model, history.features.select(torch.as_tensor(idx)))
              for name, idx in history.splits.items() if name != "train"}
    temp = history.splits["temperature"]
    temperature, bias = calibrate.fit_temperature(logits["temperature"], history.damaged[temp],
                                                  history.shipments[temp], ridge=TEMPERATURE_RIDGE)
    probs = {name: calibrate.calibrated(z, temperature, bias) for name, z in logits.items()}
    cal = history.splits["calibration"]
    certifications = certify_reported(probs["calibration"], history.first_damaged[cal], probs["temperature"],
                                      history.damaged[temp], history.shipments[temp], config.targets, config.delta,
                                      history.first_observed[cal], config.report_share)
    test = history.splits["test"]
    loosest = max(certifications)
    metrics = evaluate.observed_metrics(probs["test"], np.asarray([c.threshold for c in certifications[loosest]]),
                                        history.damaged[test], history.shipments[test])
    return FitResult(model.cpu(), net_config, config, history.tokenizer, temperature, bias, certifications, metrics,
                     None, history.fingerprint, train_seconds, len(cal), dataset=history.describe())


def certify_reported(scores: np.ndarray, first_damaged: np.ndarray, grid_scores: np.ndarray,
                     grid_damaged: np.ndarray, grid_shipments: np.ndarray, targets: tuple[float, ...], delta: float,
                     observed: np.ndarray, report_share: float) -> dict[float, list[calibrate.Certification]]:
    """Certification per target on reported damage: a share s of damaged units is reported, so the reported rate
    is s times the true one, and a true rate within t is certified as a reported rate within t × s (the test,
    its bound and the grid all read reported damage). Keyed by the true targets."""
    on_reported = {target: target * report_share for target in targets}
    certified = calibrate.certify_targets(scores, first_damaged, grid_scores, grid_damaged, grid_shipments,
                                          tuple(on_reported.values()), delta, observed=observed)
    return {target: certified[on_reported[target]] for target in sorted(targets)}


def certification_shortfall(history: History, target: float, delta: float, stricter: tuple[float, ...] = (),
                            markets: tuple[str, ...] = (), report_share: float = 1.0) -> str:
    """The warning for a run on a history that certified no package type at `target` (nor at `stricter`): what
    the test needs, what this table gave, and the least that could change it."""
    needed, products_needed = calibration_needed(target, delta, report_share)
    n_cal = len(history.splits["calibration"])
    lines = [uncertified_warning(target, delta, stricter, markets),
             f"  The certification test passes only with at least {needed} certified calibration products with no "
             "damage among them ((1 - target x report share)^n <= delta, report share "
             f"{report_share:g}); this table gave {n_cal:,} calibration products (with a shipment since "
             f"{_iso(history.cutoff)}, the newest {RECENT_SHARE:.0%} of its {history.rows:,} shipments), and a "
             "product counts for a package type only if it shipped in it then"
             + (", in a type the model's score did not pick." if history.calibrate_on == "unselected" else ".")]
    if n_cal < needed:
        lowest = math.ceil(calibrate.lowest_certifiable_target(n_cal, delta) / report_share * 1e4) / 1e4
        lines.append(f"  It needs at least {products_needed:,} products shipping in the recent period (in practice "
                     "several times more), or --targets "
                     f"{lowest} or more (the lowest target {n_cal:,} damage-free calibration products can reach).")
    else:
        lines.append("  That is enough products in principle, but no group the model scores safe was both large, "
                     "shipped in the type and damage-free enough: train longer (--epochs), on a longer history, or "
                     "with a higher --target.")
    if history.excluded:
        left = ", ".join(f"{choice} {n:,}" for choice, n in history.excluded.items())
        lines.append(f"  {sum(history.excluded.values()):,} recent shipments of calibration products were left out of "
                     f"the test because the model's score chose their type or nobody knows who did ({left}): an "
                     "audit share (audit_share in PACKWISE_MARKETPLACES_FILE) ships some products in lighter types "
                     "at random, whose outcomes certify; --calibrate-on all certifies on every shipment instead.")
    return "\n".join(lines)


# -- evaluation on a later window ----------------------------------------------------------------------------


def evaluation(folder: Path, bundle: "Bundle", marketplaces: Mapping[str, "Marketplace"], default: str,
               show_progress: bool = True) -> dict[str, Any]:
    """A bundle measured on the held-back time window of the dataset in `folder`, with the observed (reported)
    damages: for a bundle trained on a dataset, the shipments after the last one it was trained on, of the
    products that were not among its training products then (the same split rule, its seed); for a bundle trained
    on a synthetic world, the newest RECENT_SHARE of the shipments. Each product is read as of its first shipment
    in the window, judged on all of them, and certified at its marketplace's target as the worker certifies it."""
    folder = Path(folder)
    con, card = _open(folder)
    try:
        trained = bundle.config.get("dataset")
        if trained is not None:
            end = datetime.fromisoformat(trained["card"]["time_range"]["last_shipped_at"])
            cutoff = datetime.fromisoformat(trained["split"]["cutoff"])
            seed = int(bundle.config["train"]["seed"])
            ids = [r[0] for r in con.execute("SELECT DISTINCT product_id FROM t WHERE shipped_at < $c",
                                             {"c": cutoff}).fetchall()]
            con.register("trained_on", pa.table({"product_id": [p for p in ids if split_of(p, seed) == "train"]}))
            rule = (f"shipped after {_iso(end)}, the last shipment the bundle was trained on, by products it did not "
                    "train on")
            con.execute("CREATE TEMP TABLE used AS SELECT *, 'evaluate' AS split FROM t WHERE shipped_at > $end "
                        "AND product_id NOT IN (SELECT product_id FROM trained_on)", {"end": end})
        else:
            since = con.execute("SELECT quantile_disc(shipped_at, $q) FROM t", {"q": 1 - RECENT_SHARE}).fetchone()[0]
            rule = (f"in the newest {RECENT_SHARE:.0%} of the table's shipments (the bundle was trained on a "
                    "synthetic world)")
            con.execute("CREATE TEMP TABLE used AS SELECT *, 'evaluate' AS split FROM t WHERE shipped_at >= $s",
                        {"s": since})
        shipments, first, last = con.execute("SELECT count(*), min(shipped_at), max(shipped_at) FROM used").fetchone()
        if not shipments:
            raise HistoryError(f"{folder} has no shipments {rule}: evaluate on a dataset built after new shipments "
                               "have matured (`packwise dataset build` again), or train on one built with an earlier "
                               "--as-of.")
        outcomes = _outcomes(con)
    finally:
        con.close()
    catalogs = [_catalog(row) for row in outcomes.read]
    probs = bundle.probabilities(_features(folder, bundle.tokenizer, outcomes.read, catalogs, show_progress,
                                           bundle.image_size))
    codes = np.asarray([row["marketplace"] for row in outcomes.read])
    market = {code: marketplaces.get(code, marketplaces[default]) for code in set(codes)}
    thresholds = np.stack([bundle.thresholds_for(market[code].target_damage_rate)[1] for code in codes])
    by_market = {}
    for code in sorted(market):
        mine = codes == code
        used, _ = bundle.thresholds_for(market[code].target_damage_rate)
        by_market[code] = {"target": market[code].target_damage_rate, "certified_at": used,
                           "products": int(mine.sum()),
                           "per_type": evaluate.observed_metrics(probs[mine], thresholds[mine], outcomes.damaged[mine],
                                                                 outcomes.shipments[mine], bundle.delta)["per_type"]}
    return {"bundle": bundle.version, "dataset": card["fingerprint"], "delta": bundle.delta,
            "report_share": float(bundle.config["train"].get("report_share", 1.0)),
            "window": {"rule": rule, "first_shipped_at": _iso(first), "last_shipped_at": _iso(last),
                       "shipments": int(shipments), "products": len(outcomes.product_ids)},
            "metrics": evaluate.observed_metrics(probs, thresholds, outcomes.damaged, outcomes.shipments,
                                                 bundle.delta),
            "by_marketplace": by_market}


def evaluation_markdown(result: dict[str, Any], command: str) -> str:
    def rate(k: int, n: int) -> str:
        return f"{k / n:.3%}" if n else "-"

    confidence = f"{1 - result['delta']:.0%}"
    window = result["window"]
    share = result.get("report_share", 1.0)
    reported = ("" if share == 1 else f" The bundle was certified on a report share of {share:g}: a reported rate "
                f"within target × {share:g} is a true rate within target.")
    lines = [f"# Evaluation of {result['bundle']} on dataset {result['dataset']}", "", "Regenerate with:", "",
             f"```\n{command}\n```", "",
             f"Window: {window['rule']}: {window['shipments']:,} shipments of {window['products']:,} products, from "
             f"{window['first_shipped_at']} to {window['last_shipped_at']}. Labels are the damages reported within "
             "the dataset's attribution window; each product is read as of its first shipment in the window and "
             "certified at its marketplace's target.", "",
             "## Per package type", "",
             "| type | products | shipments | damaged | observed rate | PR-AUC | certified products | their shipments "
             f"| damaged | observed rate | {confidence} upper bound |", "|" + "---|" * 11]
    for pack, m in result["metrics"]["per_type"].items():
        auc = "-" if m["pr_auc"] is None else f"{m['pr_auc']:.3f}"
        bound = "-" if m["certified_upper_bound"] is None else f"{m['certified_upper_bound']:.3%}"
        lines.append(f"| {pack} | {m['products']:,} | {m['shipments']:,} | {m['damaged']:,} | "
                     f"{rate(m['damaged'], m['shipments'])} | {auc} | {m['certified_products']:,} | "
                     f"{m['certified_shipments']:,} | {m['certified_damaged']:,} | "
                     f"{rate(m['certified_damaged'], m['certified_shipments'])} | {bound} |")
    lines += ["", "## Certification per marketplace", "",
              "The observed damage rate of the certified products' shipments against the marketplace's target "
              f"(within target: the observed rate; the {confidence} upper bound says how far it may lie above)."
              + reported, "",
              "| marketplace | target | thresholds made for | products | type | certified | their shipments | "
              f"damaged | observed rate | {confidence} upper bound | within target |", "|" + "---|" * 11]
    for code, m in result["by_marketplace"].items():
        made_for = f"{m['certified_at']:.2%}" if m["certified_at"] is not None else "none (certifies nothing)"
        for pack, c in m["per_type"].items():
            n, k = c["certified_shipments"], c["certified_damaged"]
            bound = "-" if c["certified_upper_bound"] is None else f"{c['certified_upper_bound']:.3%}"
            within = "-" if not n else ("yes" if k / n <= m["target"] * share else "**no**")
            lines.append(f"| {code} | {m['target']:.2%} | {made_for} | {m['products']:,} | {pack} | "
                         f"{c['certified_products']:,} | {n:,} | {k:,} | {rate(k, n)} | {bound} | {within} |")
    return "\n".join(lines) + "\n"
