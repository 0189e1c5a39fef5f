"""Benchmarks of `packwise dataset build`: landing the topics as Parquet, and the labelled table.

    .venv/bin/python bench/bench_dataset.py landing   # non-capture events/s and captures/s, Kafka -> Parquet
    .venv/bin/python bench/bench_dataset.py landing --processes 1 2   # the same, for each number of processes
    .venv/bin/python bench/bench_dataset.py table     # the labelled table for 1M shipments (Parquet written here)
    .venv/bin/python bench/bench_dataset.py all

`landing` starts its own broker on free ports (127.0.0.1), stops it by pid, produces the events first, then
times `land()` alone in a fresh Python process (its peak RSS is that process's, not this one's). `table` writes
the landed-format Parquet input directly with numpy/pyarrow (no Kafka: the table reads only Parquet) and times
`build_table()` in a fresh process. Each run appends its figures, the command and the machine to
bench/RESULTS-dataset.md. Targets (issue 11): landing >= 50,000 non-capture events/s and >= 2,000 captures/s;
the table for 1M shipments in <= 60 s.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

RESULTS = ROOT / "bench" / "RESULTS-dataset.md"
PACKS = ("sioc", "poly_bag", "padded_mailer", "box")


def record(title: str, lines: list[str], command: str) -> None:
    import bench_worker

    bench_worker.record(title, lines, command, RESULTS)


def child(args: list[str]) -> dict:
    """Run a step of this file in a fresh interpreter; it prints one JSON line with its figures."""
    done = subprocess.run([sys.executable, __file__, *args], check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- landing ---------------------------------------------------------------------------------------------


def produce(settings, messages) -> int:
    from confluent_kafka import Producer

    from streams.topics import producer_config

    producer = Producer(producer_config(settings, **{"linger.ms": 50, "batch.size": 1_000_000,
                                                     "queue.buffering.max.messages": 1_000_000}))
    count = 0
    for topic, key, value in messages:
        while True:
            try:
                producer.produce(settings.topic_prefix + topic, key=key.encode(), value=value)
                break
            except BufferError:
                producer.poll(0.05)
        count += 1
    assert producer.flush(300) == 0
    return count


def non_capture_events(events: int, products: int):
    """Shipments (85%), catalog updates (10%), damage reports (5%), stamped over the last 60 days."""
    from streams.serde import Serde
    from tests.samples import SAMPLES

    serde = Serde()
    now = datetime.now(timezone.utc).replace(microsecond=0)
    for i in range(events):
        product = f"B{i % products:08d}"
        at = now - timedelta(seconds=(events - i) * 60 * 86400 // events)
        kind = i % 20
        if kind < 2:
            yield "catalog-updates", product, serde.encode("catalog_update", {
                **SAMPLES["catalog_update"], "event_id": str(uuid.uuid4()), "product_id": product, "updated_at": at})
        elif kind == 2:
            yield "damage-reports", product, serde.encode("damage_report", {
                **SAMPLES["damage_report"], "event_id": str(uuid.uuid4()), "product_id": product,
                "shipment_id": f"S{i - 1}", "reported_at": at})
        else:
            yield "shipments", product, serde.encode("shipment", {
                **SAMPLES["shipment"], "event_id": str(uuid.uuid4()), "product_id": product, "shipment_id": f"S{i}",
                "package_type": PACKS[i % 4], "shipped_at": at})


def capture_events(captures: int, seed: int = 3):
    """Captures as the simulated tunnel renders them (up to four 48 px PNG views each): a pool of rendered
    products, each sent under fresh event ids and recent times."""
    import numpy as np

    from models.world import World, WorldConfig, capture_record
    from streams.serde import Serde

    serde = Serde()
    pool = min(captures, 2000)
    world = World.generate(WorldConfig(seed=seed, n_products=pool))
    rng = np.random.default_rng(seed)
    rendered = [capture_record(p, rng) for p in world.products]
    now = datetime.now(timezone.utc).replace(microsecond=0)
    for i in range(captures):
        capture = rendered[i % pool]
        value = serde.encode("tunnel_capture", {**capture, "event_id": str(uuid.uuid4()),
                                                "captured_at": now - timedelta(seconds=captures - i)})
        yield "tunnel-captures", capture["product_id"], value


def land_step(bootstrap: str, prefix: str, out: str, processes: str) -> None:
    from streams.landing import land
    from streams.settings import Settings

    settings = Settings(bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=6)
    started = time.perf_counter()
    report = land(settings, Path(out), show_progress=True, processes=int(processes))
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in Path(out).rglob("*.parquet"))
    # the landing processes this one started have ended: their peak RSS is in RUSAGE_CHILDREN (the largest one)
    children_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "events": report.events, "landed": dict(report.landed),
                      "dead_letters": sum(report.dead_letters.values()), "files": report.files,
                      "parquet_mib": size / 2**20, "peak_rss_mib": peak_rss_mib(),
                      "child_peak_rss_mib": children_mib}))


def bench_landing(events: int, captures: int, processes: list[int], command: str) -> None:
    from streams.broker import LocalBroker, free_port
    from streams.settings import Settings
    from streams.topics import create_topics

    with tempfile.TemporaryDirectory(prefix="bench-dataset-") as tmp:
        broker = LocalBroker(Path(tmp) / "kafka", free_port(), free_port(), heap="1g")
        broker.start(echo=False)
        try:
            lines = []
            for name, messages, unit, goal in (
                    ("non-capture", non_capture_events(events, max(1, events // 10)), "events", 50_000),
                    ("capture", capture_events(captures), "captures", 2_000)):
                settings = Settings(bootstrap_servers=broker.bootstrap, topic_prefix=f"b{uuid.uuid4().hex[:6]}.",
                                    partitions=6)
                create_topics(settings)
                started = time.perf_counter()
                produced = produce(settings, messages)
                produce_s = time.perf_counter() - started
                for count in processes:  # the same events landed again, into a folder of its own
                    result = child(["_land", broker.bootstrap, settings.topic_prefix,
                                    str(Path(tmp) / f"{name}-{count}"), str(count)])
                    rate = result["events"] / result["seconds"]
                    verdict = "met" if rate >= goal else "MISSED"
                    rss = f"peak RSS {result['peak_rss_mib']:.0f} MiB" + (
                        f" (+ {result['child_peak_rss_mib']:.0f} MiB per other process)" if count > 1 else "")
                    lines.append(f"{name}, {count} process{'es' if count > 1 else ''}: {result['events']:,} {unit} "
                                 f"landed in {result['seconds']:.1f} s = **{rate:,.0f} {unit}/s** (target >= "
                                 f"{goal:,}: {verdict}); {rss}; {result['files']} files, "
                                 f"{result['parquet_mib']:.1f} MiB of Parquet; {result['dead_letters']} dead "
                                 f"letters (produced {produced:,} in {produce_s:.1f} s beforehand, 6 partitions)")
        finally:
            broker.stop()
    record("Landing the topics as Parquet", lines, command)


# -- the table -------------------------------------------------------------------------------------------


def write_table_input(folder: Path, shipments: int, products: int, seed: int = 5) -> dict[str, int]:
    """Landed-format Parquet for `shipments` shipments over 180 days: catalog updates (1.5 per product),
    captures (1.2 per product, the 1-pixel PNG as views), damage reports for 1% of the shipments (70% naming
    their shipment, the rest by product and type), 1% of shipments resent under the same id, and the workers'
    decisions (2 per product)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from streams.landing import LANDED, arrow_schema
    from streams.serde import Serde
    from tests.samples import PNG_1PX

    rng = np.random.default_rng(seed)
    schemas = {base: arrow_schema(Serde(), contract) for base, contract in LANDED.items()}
    start_ms = int(datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
    span_ms = 180 * 86400 * 1000

    def ids(prefix: str, n: int) -> pa.Array:
        return pa.array([f"{prefix}{i:012d}" for i in range(n)])

    def stamp(values: np.ndarray) -> pa.Array:
        return pa.array(values.astype("int64"), type=pa.timestamp("ms", tz="UTC"))

    def write(base: str, columns: dict[str, object], n: int, parts: int = 8) -> None:
        columns = {**columns, "kafka_partition": pa.array(np.zeros(n, "int32")),
                   "kafka_offset": pa.array(np.arange(n, dtype="int64")),
                   "kafka_timestamp": columns[{"catalog-updates": "updated_at", "tunnel-captures": "captured_at",
                                               "shipments": "shipped_at", "damage-reports": "reported_at",
                                               "pack-type-decisions": "decided_at"}[base]]}
        table = pa.table({f.name: columns[f.name] for f in schemas[base]}, schema=schemas[base])
        (folder / base).mkdir(parents=True, exist_ok=True)
        step = -(-n // parts)
        for part in range(parts):
            pq.write_table(table.slice(part * step, step), folder / base / f"part-{part}.parquet", compression="zstd")

    def product_ids(values: np.ndarray) -> pa.Array:
        names = np.array([f"B{i:08d}" for i in range(products)], dtype=object)
        return pa.array(names[values])

    def const(value, n: int, kind=None) -> pa.Array:
        return pa.repeat(pa.scalar(value, type=kind), n)

    def first_then_random(n: int) -> np.ndarray:
        """Every product's first record in the first day, its later ones at any time."""
        return np.concatenate([rng.integers(0, 86400 * 1000, products), rng.integers(0, span_ms, n - products)])

    n_cat = products * 3 // 2
    cat_product = np.concatenate([np.arange(products), rng.integers(0, products, n_cat - products)])
    write("catalog-updates", {
        "event_id": ids("c", n_cat), "product_id": product_ids(cat_product), "marketplace": pa.array(
            np.array(["NA", "EU", "JP"], dtype=object)[cat_product % 3]),
        "locale": pa.array(np.array(["en_US", "de_DE", "ja_JP"], dtype=object)[cat_product % 3]),
        "title": const("Ceramic mug, 350 ml", n_cat), "description": const("Dishwasher safe.", n_cat),
        "bullet_points": const(["ceramic", "350 ml"], n_cat, pa.list_(pa.string())),
        "category": const("Kitchen > Drinkware", n_cat), "price": pa.array(rng.uniform(1, 100, n_cat)),
        "currency": const("USD", n_cat), **{f"item_{d}_mm": pa.array(rng.uniform(10, 400, n_cat).astype("float32"))
                                            for d in ("length", "width", "height")},
        "item_weight_g": pa.array(rng.uniform(10, 5000, n_cat).astype("float32")),
        "updated_at": stamp(start_ms + first_then_random(n_cat))}, n_cat)

    n_cap = products * 6 // 5
    cap_product = np.concatenate([np.arange(products), rng.integers(0, products, n_cap - products)])
    view = {"view": "top", "media_type": "image/png", "image": PNG_1PX}
    write("tunnel-captures", {
        "event_id": ids("k", n_cap), "product_id": product_ids(cap_product), "fulfillment_center": const("FC-SEA1", n_cap),
        "tunnel_id": const("T1", n_cap), "captured_at": stamp(start_ms + first_then_random(n_cap)),
        "views": const([view], n_cap, schemas["tunnel-captures"].field("views").type),
        **{f"measured_{d}_mm": pa.array(rng.uniform(10, 400, n_cap).astype("float32"))
           for d in ("length", "width", "height")},
        "measured_weight_g": pa.array(rng.uniform(10, 5000, n_cap).astype("float32"))}, n_cap)

    ship_product = rng.integers(0, products, shipments)
    ship_ms = start_ms + rng.integers(0, span_ms, shipments)
    ship_pack = rng.integers(0, 4, shipments)
    resent = rng.choice(shipments, shipments // 100, replace=False)
    order = np.concatenate([np.arange(shipments), resent])  # resends: the same event written again
    packs = np.array(PACKS, dtype=object)
    ship_ids = np.array([f"S{i:012d}" for i in range(shipments)], dtype=object)
    write("shipments", {
        "event_id": pa.array(np.array([f"s{i:012d}" for i in range(shipments)], dtype=object)[order]),
        "product_id": product_ids(ship_product[order]), "shipment_id": pa.array(ship_ids[order]),
        "package_type": pa.array(packs[ship_pack[order]]),
        "marketplace": pa.array(np.array(["NA", "EU", "JP"], dtype=object)[ship_product[order] % 3]),
        "fulfillment_center": const("FC-SEA1", len(order)), "shipped_at": stamp(ship_ms[order])}, len(order))

    damaged = rng.choice(shipments, shipments // 100, replace=False)
    n_rep = len(damaged)
    named = rng.random(n_rep) < 0.7
    write("damage-reports", {
        "event_id": ids("r", n_rep), "product_id": product_ids(ship_product[damaged]),
        "shipment_id": pa.array(np.where(named, ship_ids[damaged], None)),
        "package_type": pa.array(packs[ship_pack[damaged]]), "source": const("returns_center", n_rep),
        "reason_code": const("BROKEN", n_rep), "comment": const(None, n_rep, pa.string()),
        "reported_at": stamp(ship_ms[damaged] + rng.integers(0, 20 * 86400 * 1000, n_rep))}, n_rep)

    # the workers' decisions, two per product (a first one, then a change), each shipment then joins the one in
    # force in its type
    n_dec = products * 2
    dec_product = np.concatenate([np.arange(products), rng.integers(0, products, n_dec - products)])
    chosen = np.array(["model_certified", "data_certified", "safe_default", "provisional", "audit"], dtype=object)
    write("pack-type-decisions", {
        "event_id": ids("d", n_dec), "product_id": product_ids(dec_product), "marketplace": pa.array(
            np.array(["NA", "EU", "JP"], dtype=object)[dec_product % 3]),
        "package_type": pa.array(packs[rng.integers(0, 4, n_dec)]), "status": const("auto_certified", n_dec),
        "reason": const("model certifies poly_bag at the 0.50% target", n_dec),
        "evidence": const([], n_dec, schemas["pack-type-decisions"].field("evidence").type),
        "target_damage_rate": const(0.005, n_dec), "model_version": const("pw-bench", n_dec),
        "decided_at": stamp(start_ms + first_then_random(n_dec)), "provisional": const(False, n_dec),
        "packaging_weight_g": const(20.0, n_dec), "all_box_weight_g": const(150.0, n_dec),
        "chosen_by": pa.array(chosen[rng.integers(0, len(chosen), n_dec)]),
        "audit_propensity": const(None, n_dec, pa.float64())}, n_dec)
    return {"shipments": len(order), "catalog-updates": n_cat, "tunnel-captures": n_cap, "damage-reports": n_rep,
            "pack-type-decisions": n_dec}


def table_step(folder: str, threads: int) -> None:
    from models.dataset import TableConfig, build_table
    from streams.landing import LANDED, arrow_schema
    from streams.serde import Serde

    serde = Serde()
    files = {base: sorted((Path(folder) / base).glob("*.parquet")) for base in LANDED}
    schemas = {base: arrow_schema(serde, contract) for base, contract in LANDED.items()}
    started = time.perf_counter()
    stats = build_table(files, schemas, Path(folder) / "table" / "labelled.parquet", TableConfig(threads=threads))
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "rows": stats["rows"], "positives": stats["positives"],
                      "immature": stats["held_back_immature"], "duplicates": stats["duplicates_dropped"],
                      "table_mib": (Path(folder) / "table" / "labelled.parquet").stat().st_size / 2**20,
                      "peak_rss_mib": peak_rss_mib()}))


def bench_table(shipments: int, products: int, threads: int, command: str) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-table-") as tmp:
        started = time.perf_counter()
        counts = write_table_input(Path(tmp), shipments, products)
        generate_s = time.perf_counter() - started
        result = child(["_table", tmp, str(threads)])
    mature = result["rows"] + result["immature"]
    verdict = "met" if result["seconds"] <= 60 else "MISSED"
    record("The labelled table", [
        f"input: {counts['shipments']:,} shipment events ({shipments:,} distinct, 1% resent), "
        f"{counts['catalog-updates']:,} catalog updates, {counts['tunnel-captures']:,} captures, "
        f"{counts['damage-reports']:,} damage reports, {counts['pack-type-decisions']:,} decisions (each row "
        f"joined to the one in force in its type), {products:,} products over 180 days "
        f"(generated in {generate_s:.1f} s, not timed)",
        f"table of {mature:,} shipments ({result['rows']:,} mature rows, {result['positives']:,} damaged, "
        f"{result['immature']:,} held back) in **{result['seconds']:.1f} s** (target <= 60 s: {verdict}), "
        f"DuckDB threads {threads}; peak RSS {result['peak_rss_mib']:.0f} MiB; table "
        f"{result['table_mib']:.1f} MiB; duplicates dropped {result['duplicates']}"], command)


def main() -> None:
    if sys.argv[1:2] == ["_land"]:
        return land_step(*sys.argv[2:6])
    if sys.argv[1:2] == ["_table"]:
        return table_step(sys.argv[2], int(sys.argv[3]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("which", choices=["landing", "table", "all"])
    parser.add_argument("--events", type=int, default=500_000, help="non-capture events to land")
    parser.add_argument("--captures", type=int, default=20_000, help="captures to land")
    parser.add_argument("--shipments", type=int, default=1_000_000, help="shipments in the table benchmark")
    parser.add_argument("--products", type=int, default=100_000, help="products in the table benchmark")
    parser.add_argument("--threads", type=int, default=2, help="DuckDB threads in the table benchmark")
    parser.add_argument("--processes", type=int, nargs="+", default=None,
                        help="landing processes (several: the same events landed once with each; default: as "
                             "`packwise dataset build`, one per core less one)")
    args = parser.parse_args()
    command = ".venv/bin/python bench/bench_dataset.py " + " ".join(sys.argv[1:])
    if args.which in ("landing", "all"):
        from streams.landing import default_processes

        bench_landing(args.events, args.captures, args.processes or [default_processes()], command)
    if args.which in ("table", "all"):
        bench_table(args.shipments, args.products, args.threads, command)


if __name__ == "__main__":
    main()
