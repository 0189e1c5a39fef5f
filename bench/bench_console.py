"""Benchmark of `packwise console` at a network's size: 1M products in the decisions topic.

    .venv/bin/python bench/bench_console.py                     # 1,000,000 products
    .venv/bin/python bench/bench_console.py --products 100000   # a quicker look

It starts its own broker on free ports (127.0.0.1, stopped by pid), produces one decision per product (with
evidence for the four types, as workers publish them), an open test request for a third of them, relabel
triggers for 1% and three shipments for 10%, then starts `packwise console` as a child process and measures:
the catch-up (start until every partition is read to its end, from /healthz), the console's peak and settled
RSS, and the latency of the overview, product, test-queue and dead-letter pages requested one at a time (median
and p95 over repeated requests). Appends the figures, the command and the machine to bench/RESULTS-console.md.
Target (issue 12): overview and product pages p95 <= 200 ms with 1M products.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_worker import Cluster, produce, record  # noqa: E402
from streams.broker import free_port  # noqa: E402
from streams.console.process import ConsoleProcess  # noqa: E402
from streams.serde import Serde  # noqa: E402
from streams.settings import Settings  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS-console.md"
PACKS = ("sioc", "poly_bag", "padded_mailer", "box")
MARKETS = {"NA": 0.005, "EU": 0.004, "JP": 0.003}


def product_id(i: int) -> str:
    return f"B{i:09d}"


def messages(settings: Settings, products: int, seed: int):
    """(topic, key, value) for the data set, decisions first."""
    rng = random.Random(seed)
    serde = Serde()
    prefix = settings.topic_prefix
    start = datetime.now(timezone.utc) - timedelta(days=2)
    for i in range(products):
        product = product_id(i)
        market = rng.choice(list(MARKETS))
        pack = rng.choices(PACKS, weights=(5, 45, 15, 35))[0]
        certified = rng.random() < 0.8
        at = start + timedelta(seconds=i * 0.1)
        evidence = [{"package_type": p, "model_probability": rng.random() * 0.02, "model_certified": certified,
                     "shipments": rng.randrange(50), "damages": 0, "damage_rate_lower": 0.0,
                     "damage_rate_upper": rng.random() * 0.01} for p in PACKS]
        yield prefix + "pack-type-decisions", product, serde.encode("pack_type_decision", {
            "event_id": str(uuid.uuid4()), "product_id": product, "marketplace": market, "package_type": pack,
            "status": "auto_certified" if certified else "needs_test",
            "reason": f"model certifies {pack} at target {MARKETS[market]:.2%}", "evidence": evidence,
            "target_damage_rate": MARKETS[market], "model_version": "pw-bench", "decided_at": at,
            "provisional": False, "packaging_weight_g": 20.0, "all_box_weight_g": 180.0}, validate=False)
        if i % 3 == 0 and pack != "sioc":
            lighter = PACKS[PACKS.index(pack) - 1]
            request = str(uuid.uuid4())
            yield prefix + "test-requests", product, serde.encode("test_request", {
                "event_id": request, "product_id": product, "marketplace": market, "package_type": lighter,
                "current_package_type": pack, "weight_saved_g": rng.uniform(5, 200), "model_probability": 0.004,
                "model_version": "pw-bench", "requested_at": at, "status": "open", "request_id": request,
                "closed_at": None, "reason": None, "superseded_by": None}, validate=False)
        if i % 100 == 0:
            yield prefix + "relabel-triggers", product, serde.encode("relabel_trigger", {
                "event_id": str(uuid.uuid4()), "product_id": product, "marketplace": market,
                "from_package_type": "poly_bag", "to_package_type": "box", "cause": "damage_exceeds_target",
                "reason": "2 damages in 30 poly_bag shipments", "shipments": 30, "damages": 2,
                "damage_rate_lower": 0.01, "damage_rate_upper": 0.2, "model_version": "pw-bench",
                "triggered_at": at}, validate=False)
        if i % 10 == 0:
            for k in range(3):
                yield prefix + "shipments", product, serde.encode("shipment", {
                    "event_id": str(uuid.uuid4()), "product_id": product, "shipment_id": f"{product}-{k}",
                    "package_type": pack, "marketplace": market, "fulfillment_center": f"FC-{i % 7}",
                    "shipped_at": at + timedelta(hours=k + 1)}, validate=False)


def timed_get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        response.read()
        assert response.status == 200, url
    return time.perf_counter() - started


def latency(urls: list[str]) -> tuple[float, float]:
    """Median and p95 in ms over the given requests, made one after another."""
    times = sorted(timed_get(url) * 1000 for url in urls)
    return statistics.median(times), times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200, help="requests per page kind")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pw-bench-console-"))
    cluster = Cluster.start(tmp / "kafka", secure=False)
    try:
        run = uuid.uuid4().hex[:6]
        settings = Settings(bootstrap_servers=cluster.broker.bootstrap, topic_prefix=f"b{run}.", app_id=f"pwb-{run}",
                            partitions=6, state_dir=str(tmp / "state"), console_port=free_port(),
                            console_metrics_urls="http://127.0.0.1:9/metrics")
        cluster.create_topics(settings)
        began = time.perf_counter()
        sent = produce(settings, messages(settings, args.products, args.seed))
        print(f"produced {sent:,} messages in {time.perf_counter() - began:.0f} s", flush=True)
        console = ConsoleProcess(settings, tmp / "console.log")
        peak = [0.0]
        console.start()
        watching = True

        def watch_rss() -> None:
            while watching:
                try:
                    peak[0] = max(peak[0], console.rss_mib())
                except Exception:
                    pass
                time.sleep(0.5)

        watcher = threading.Thread(target=watch_rss, daemon=True)
        watcher.start()
        try:
            catch_up_s = console.wait_caught_up(timeout_s=3600)
            time.sleep(2)
            settled = console.rss_mib()
            rng = random.Random(args.seed + 1)
            n = args.requests
            pages = {
                "overview": [console.url + "/"] * max(20, n // 4),
                "product": [f"{console.url}/products/{product_id(rng.randrange(args.products))}" for _ in range(n)],
                "test queue": [console.url + "/tests"] * max(20, n // 4),
                "test queue, EU, page 50": [console.url + "/tests?marketplace=EU&page=50"] * max(20, n // 4),
                "dead letters": [console.url + "/dead-letters"] * max(20, n // 4),
            }
            timed_get(console.url + "/")  # a first request warms the page's code paths
            figures = {name: latency(urls) for name, urls in pages.items()}
            started = time.perf_counter()
            csv_bytes = len(urllib.request.urlopen(console.url + "/tests.csv", timeout=600).read())
            csv_s = time.perf_counter() - started
            db = Path(settings.state_dir) / "console" / f"{settings.app_id}.sqlite3"
            db_mib = sum(p.stat().st_size for p in db.parent.glob(db.name + "*")) / 2**20
        finally:
            watching = False
            console.stop()
        lines = [f"data set: {args.products:,} products decided ({sent:,} messages: decisions, open test requests "
                 "for a third, relabel triggers for 1%, three shipments for 10%), 6 partitions",
                 f"catch-up from an empty store: {catch_up_s:.0f} s ({sent / catch_up_s:,.0f} messages/s); console "
                 f"RSS peak {peak[0]:.0f} MiB, settled {settled:.0f} MiB; store on disk {db_mib:,.0f} MiB"]
        for name, (median, p95) in figures.items():
            goal = " (target p95 <= 200 ms: " + ("met" if p95 <= 200 else "MISSED") + ")" \
                if name in ("overview", "product") else ""
            lines.append(f"{name} page: median {median:.1f} ms, p95 {p95:.1f} ms{goal}")
        lines.append(f"CSV export of every open test request: {csv_bytes / 2**20:.1f} MiB in {csv_s:.1f} s")
        record(f"console, {args.products:,} products", lines,
               f".venv/bin/python bench/bench_console.py --products {args.products}", RESULTS)
    finally:
        cluster.broker.stop()


if __name__ == "__main__":
    main()
