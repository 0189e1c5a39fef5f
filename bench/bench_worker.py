"""Benchmarks of the stream worker against a real broker (started here on free ports, stopped by pid).

    .venv/bin/python bench/bench_worker.py stats     # statistics path vs a plain aiokafka loop
    .venv/bin/python bench/bench_worker.py scoring   # scoring path vs offline batch inference
    .venv/bin/python bench/bench_worker.py latency   # capture -> decision latency at a steady rate
    .venv/bin/python bench/bench_worker.py memory    # worker RSS with N products, restart time
    .venv/bin/python bench/bench_worker.py contention  # the model beside a busy event loop: same process or its own
    .venv/bin/python bench/bench_worker.py all

Each run appends its figures, the command and the machine to bench/RESULTS-worker.md. The machine is
shared and noisy: compare the ratios measured side by side in one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from confluent_kafka import Producer  # noqa: E402

from streams.broker import LocalBroker, free_port  # noqa: E402
from streams.inspect import read_topic  # noqa: E402
from streams.serde import Serde  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.topics import admin_client, create_topics, producer_config  # noqa: E402
from streams.workers import WorkerProcess, settings_env  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS-worker.md"
BROKER_PID: list[int] = []  # the broker main() started, for CPU accounting
SERDE = Serde()
PACKS = ["sioc", "poly_bag", "padded_mailer", "box"]


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{model}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}"


def record(title: str, lines: list[str], command: str) -> None:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = f"\n## {title} ({stamp})\n\n`{command}` on {machine()}\n\n" + "\n".join(f"- {line}" for line in lines) + "\n"
    with open(RESULTS, "a") as results:
        results.write(text)
    print(text)


def committed_total(settings: Settings, topics: list[str]) -> int:
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

    admin = admin_client(settings)
    partitions = [TopicPartition(t, p) for t in topics for p in range(settings.partitions)]
    future = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(settings.app_id, partitions)])
    result = list(future.values())[0].result()
    return sum(max(tp.offset, 0) for tp in result.topic_partitions)


def produce(settings: Settings, messages) -> int:
    producer = Producer(producer_config(settings, **{"linger.ms": 50, "batch.size": 1_000_000,
                                                     "queue.buffering.max.messages": 1_000_000}))
    count = 0
    for topic, key, value in messages:
        while True:
            try:
                producer.produce(topic, key=key.encode(), value=value)
                break
            except BufferError:
                producer.poll(0.05)
        count += 1
    producer.flush(120)
    return count


def damage_events(settings: Settings, products: int, per_product: int):
    """Shipments and damage reports (1 in 50), encoded once per distinct shape and re-keyed: the benchmark
    measures the worker, not the producer."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    for i in range(products * per_product):
        product = f"B{i % products:08d}"
        pack = PACKS[i % 4]
        if i % 50 == 49:
            record = {"event_id": str(uuid.uuid4()), "product_id": product, "shipment_id": None, "package_type": pack,
                      "source": "review", "reason_code": "BROKEN", "comment": None, "reported_at": now}
            yield settings.topic_prefix + "damage-reports", product, SERDE.encode("damage_report", record)
        else:
            record = {"event_id": str(uuid.uuid4()), "product_id": product, "shipment_id": f"S{i}", "package_type": pack,
                      "marketplace": "NA", "fulfillment_center": "FC-SEA1", "shipped_at": now}
            yield settings.topic_prefix + "shipments", product, SERDE.encode("shipment", record)


async def plain_loop(settings: Settings, topics: list[str], expected: int) -> float:
    """The floor to compare with: aiokafka consuming and decoding the same topics, nothing else."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=settings.bootstrap_servers, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False, max_poll_records=2000)
    await consumer.start()
    seen, started = 0, time.monotonic()
    try:
        while seen < expected:
            for tp, batch in (await consumer.getmany(timeout_ms=500, max_records=2000)).items():
                contract = "shipment" if tp.topic.endswith("shipments") else "damage_report"
                for message in batch:
                    SERDE.decode(contract, message.value)
                seen += len(batch)
    finally:
        await consumer.stop()
    return expected / (time.monotonic() - started)


def bench_stats(base: Settings, tmp: Path, bundle: Path, products: int, per_product: int) -> list[str]:
    settings = base.replace(app_id=f"bench-stats-{uuid.uuid4().hex[:6]}", topic_prefix=f"st{uuid.uuid4().hex[:6]}.")
    create_topics(settings)
    total = produce(settings, damage_events(settings, products, per_product))
    topics = [settings.topic_prefix + "shipments", settings.topic_prefix + "damage-reports"]
    plain = [asyncio.run(plain_loop(settings, topics, total)) for _ in range(3)]
    bare = {variant: faust_floor(settings, topics, total, tmp, *variant)
            for variant in ((False, False), (True, False), (True, True))}
    worker = WorkerProcess(settings.replace(model_path=str(bundle), state_dir=str(tmp / "stats")), tmp / "stats.log")
    worker.start()
    samples: list[tuple[float, int]] = []
    try:
        while not samples or samples[-1][1] < total:
            samples.append((time.monotonic(), committed_total(settings, topics)))
            time.sleep(0.5)
    finally:
        worker.stop()
    first = next(i for i, (_, n) in enumerate(samples) if n > 0)
    # rate between the first and the last commit observed, so start-up and the 2.8 s commit cadence are out
    t0, n0 = samples[first]
    t1, n1 = samples[-1]
    rate = (n1 - n0) / (t1 - t0)
    return [f"statistics path: {total} events ({products} products, {per_product} per product, 1 in 50 a damage report), "
            f"{settings.partitions} partitions",
            f"plain aiokafka consume+decode loop: median {statistics.median(plain):,.0f} events/s (runs: "
            f"{', '.join(f'{r:,.0f}' for r in plain)})",
            f"bare Faust worker (take_events + decode, nothing else): {bare[False, False]:,.0f} events/s "
            f"({bare[False, False] / statistics.median(plain):.0%} of the plain loop); with packwise's delivery fast "
            f"path {bare[True, False]:,.0f} events/s ({bare[True, False] / statistics.median(plain):.0%}); "
            f"that plus one table write per event {bare[True, True]:,.0f} events/s",
            f"one worker: {rate:,.0f} events/s ({n1 - n0} events between the first and last commits)",
            f"ratio worker / plain loop: {rate / statistics.median(plain):.0%} (targets: >= 5,000 events/s, >= 30%)"]


def faust_floor(settings: Settings, topics: list[str], expected: int, tmp: Path, fast_delivery: bool,
                table: bool) -> float:
    """Events/s of a bare Faust agent over the same topics (bench/faust_floor.py), in its own process."""
    name = f"floor-{int(fast_delivery)}{int(table)}"
    result = tmp / f"{name}.result"
    env = {**os.environ, "FLOOR_TOPICS": ",".join(topics), "FLOOR_EXPECTED": str(expected),
           "FLOOR_BOOTSTRAP": settings.bootstrap_servers, "FLOOR_DATADIR": str(tmp / name),
           "FLOOR_RESULT": str(result), "FLOOR_FAST_DELIVERY": "1" if fast_delivery else "0",
           "FLOOR_TABLE": "1" if table else "0", "FLOOR_PARTITIONS": str(settings.partitions)}
    with open(tmp / f"{name}.log", "w") as log:
        process = subprocess.Popen([sys.executable, str(ROOT / "bench" / "faust_floor.py"), "worker", "-l", "warn"],
                                   env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp)
        try:
            process.wait(timeout=600)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    if not result.exists():
        raise RuntimeError(f"the bare Faust worker wrote no result; its log: {log.name}")
    messages, seconds = result.read_text().split()
    return int(messages) / float(seconds)


def capture_messages(settings: Settings, products: int, seed: int):
    from models.world import World, WorldConfig, capture_record, catalog_record
    import numpy as np

    world = World.generate(WorldConfig(seed=seed, n_products=products))
    rng = np.random.default_rng(seed)
    catalogs = [catalog_record(p) for p in world.products]
    captures = [capture_record(p, rng) for p in world.products]
    return catalogs, captures


def cpu_seconds(processes: dict[str, psutil.Process]) -> dict[str, float]:
    """User + system CPU seconds each process has used so far."""
    return {name: sum(p.cpu_times()[:2]) for name, p in processes.items()}


def bench_scoring(base: Settings, tmp: Path, bundle: Path, products: int) -> list[str]:
    import torch

    from models.bundle import load_bundle

    settings = base.replace(app_id=f"bench-score-{uuid.uuid4().hex[:6]}", topic_prefix=f"sc{uuid.uuid4().hex[:6]}.")
    create_topics(settings)
    catalogs, captures = capture_messages(settings, products, seed=31)
    loaded = load_bundle(bundle)
    decoded = [SERDE.decode("tunnel_capture", SERDE.encode("tunnel_capture", c)) for c in captures]

    def offline_rate() -> tuple[float, float]:
        """captures/s and CPU ms per capture of Bundle.predict in batches of the worker's size"""
        started, cpu = time.monotonic(), time.process_time()
        for i in range(0, products, settings.batch_size):
            loaded.predict(catalogs[i:i + settings.batch_size], decoded[i:i + settings.batch_size])
        return products / (time.monotonic() - started), (time.process_time() - cpu) * 1000 / products

    all_threads = torch.get_num_threads()
    offline = [offline_rate() for _ in range(3)]
    worker_threads = settings.scoring_threads or max(1, len(os.sched_getaffinity(0)) - 1)
    torch.set_num_threads(worker_threads)
    offline_same = [offline_rate()[0] for _ in range(3)]
    del loaded
    worker = WorkerProcess(settings.replace(model_path=str(bundle), state_dir=str(tmp / "scoring")), tmp / "scoring.log")
    worker.start()
    try:
        produce(settings, ((settings.topic_prefix + "catalog-updates", c["product_id"], SERDE.encode("catalog_update", c))
                           for c in catalogs))
        time.sleep(5.0)  # the catalog is in; now the tunnel
        parent = psutil.Process(worker.process.pid)
        scoring = [c for c in parent.children() if "spawn_main" in " ".join(c.cmdline())]
        processes = {"worker": parent, "scoring process": scoring[0], "broker": psutil.Process(BROKER_PID[0])}
        cpu_before = cpu_seconds(processes)
        produce(settings, ((settings.topic_prefix + "tunnel-captures", c["product_id"], SERDE.encode("tunnel_capture", c))
                           for c in captures))
        deadline = time.monotonic() + 600
        decisions: list[dict] = []
        while time.monotonic() < deadline:
            decisions = read_topic(settings, settings.topic_prefix + "pack-type-decisions", "pack_type_decision")
            if len({d["product_id"] for d in decisions if d["model_version"]}) >= products:
                break
            time.sleep(2.0)
        cpu_used = {name: (after - cpu_before[name]) * 1000 / products
                    for name, after in cpu_seconds(processes).items()}
    finally:
        worker.stop()
    scored = sorted(d["decided_at"] for d in decisions if d["model_version"])
    span = (scored[-1] - scored[0]).total_seconds()
    rate = (len(scored) - 1) / span
    median_offline = statistics.median(r for r, _ in offline)
    return [f"scoring path: {products} products, catalog first, then every capture (4 views, 48x48 PNG) at once; "
            f"batch size {settings.batch_size}",
            f"offline Bundle.predict on the same decoded records, {all_threads} torch threads: median "
            f"{median_offline:,.0f} captures/s (runs: {', '.join(f'{r:,.0f}' for r, _ in offline)}), "
            f"{statistics.median(c for _, c in offline):.1f} CPU ms per capture; with the worker's {worker_threads} "
            f"thread(s): median {statistics.median(offline_same):,.0f} captures/s",
            f"one worker: {rate:,.0f} captures/s (first to last decision: {span:.1f} s)",
            "CPU ms per capture while the worker scored (captures in, decisions out): "
            + ", ".join(f"{name} {ms:.1f}" for name, ms in cpu_used.items())
            + f"; {sum(cpu_used.values()):.1f} in all, on {len(os.sched_getaffinity(0))} cores",
            f"streaming overhead: {1 - rate / median_offline:.0%} against {all_threads} threads, "
            f"{1 - rate / statistics.median(offline_same):.0%} against {worker_threads} (target: at most 20%)"]


def bench_contention(bundle: Path, products: int = 512, repeats: int = 3) -> list[str]:
    """Why the model runs in its own process: the same batches scored in this process alone, in a thread
    beside a thread that runs Python without pause (an event loop under load), and in a ScoringProcess
    beside that same thread. One torch thread each, as the worker's default on 2 cores."""
    import threading

    import torch

    from models.bundle import load_bundle
    from streams.processor import ScoreJob
    from streams.scoring import ScoringProcess

    catalogs, captures = capture_messages(Settings(), products, seed=51)
    decoded = [SERDE.decode("tunnel_capture", SERDE.encode("tunnel_capture", c)) for c in captures]
    jobs = [ScoreJob(c["product_id"], c, d, ("tunnel-captures", 0)) for c, d in zip(catalogs, decoded)]
    loaded = load_bundle(bundle)
    torch.set_num_threads(1)
    in_process = lambda batch: loaded.predict([j.catalog for j in batch], [j.capture for j in batch])  # noqa: E731

    def rate(score) -> float:
        started = time.monotonic()
        for i in range(0, products, 64):
            score(jobs[i:i + 64])
        return products / (time.monotonic() - started)

    def beside_busy_python(score) -> float:
        stop, result = threading.Event(), []

        def busy() -> None:
            while not stop.is_set():
                sum(range(200))

        spinner = threading.Thread(target=busy)
        spinner.start()
        try:
            scorer = threading.Thread(target=lambda: result.append(rate(score)))
            scorer.start()
            scorer.join()
        finally:
            stop.set()
            spinner.join()
        return result[0]

    rate(in_process)  # warm-up
    alone = [rate(in_process) for _ in range(repeats)]
    shared = [beside_busy_python(in_process) for _ in range(repeats)]
    process = ScoringProcess(bundle, threads=1)
    try:
        own = [beside_busy_python(process.score) for _ in range(repeats)]
    finally:
        process.close()
    m = statistics.median
    return [f"{products} captures in batches of 64, 1 torch thread, median of {repeats}",
            f"in this process, nothing else running: {m(alone):,.0f} captures/s",
            f"in this process, beside a thread running Python without pause: {m(shared):,.0f} captures/s "
            f"({m(alone) / m(shared):.0f}x slower)",
            f"in a scoring process (streams/scoring.py), beside the same thread: {m(own):,.0f} captures/s"]


def bench_latency(base: Settings, tmp: Path, bundle: Path, rate: float, seconds: float) -> list[str]:
    settings = base.replace(app_id=f"bench-lat-{uuid.uuid4().hex[:6]}", topic_prefix=f"la{uuid.uuid4().hex[:6]}.")
    create_topics(settings)
    count = int(rate * seconds)
    catalogs, captures = capture_messages(settings, count, seed=41)
    worker = WorkerProcess(settings.replace(model_path=str(bundle), state_dir=str(tmp / "latency")), tmp / "latency.log")
    worker.start()
    try:
        produce(settings, ((settings.topic_prefix + "catalog-updates", c["product_id"], SERDE.encode("catalog_update", c))
                           for c in catalogs))
        time.sleep(5.0)
        producer = Producer(producer_config(settings, **{"linger.ms": 0}))
        topic = settings.topic_prefix + "tunnel-captures"
        producer.list_topics(topic, timeout=10)  # a tunnel's producer is long-lived: connected, metadata known
        started = time.monotonic()
        for i, capture in enumerate(captures):
            time.sleep(max(0.0, started + i / rate - time.monotonic()))
            now = datetime.fromtimestamp(round(time.time(), 3), tz=timezone.utc)
            producer.produce(topic, key=capture["product_id"].encode(),
                             value=SERDE.encode("tunnel_capture", {**capture, "captured_at": now}))
            producer.poll(0)
        producer.flush(30)
        time.sleep(5.0)
        decisions = read_topic(settings, settings.topic_prefix + "pack-type-decisions", "pack_type_decision")
    finally:
        worker.stop()
    timed = []  # (seconds into the run, latency ms)
    # captured_at was stamped at send time; the decision's decided_at is stamped by the worker (same clock)
    by_product = {d["product_id"]: d for d in decisions if d["model_version"]}
    stamps = read_topic(settings, topic, "tunnel_capture")
    first = min(c["captured_at"] for c in stamps)
    for capture in stamps:
        decision = by_product.get(capture["product_id"])
        if decision is not None:
            timed.append(((capture["captured_at"] - first).total_seconds(),
                          (decision["decided_at"] - capture["captured_at"]).total_seconds() * 1000))
    lat = sorted(ms for _, ms in timed)
    slow = sorted(t for t, ms in timed if ms >= 250)
    seconds_with_slow = sorted({int(t) for t in slow})
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
    return [f"latency: {count} captures at a steady {rate:.0f}/s for {seconds:.0f} s, each of a distinct product "
            f"whose catalog record is already in; {len(lat)} of {count} decided",
            f"capture -> decision: p50 {p(0.50):.0f} ms, p90 {p(0.90):.0f} ms, p99 {p(0.99):.0f} ms, max {lat[-1]:.0f} ms "
            f"(target: p99 < 250 ms)",
            f"{len(slow)} captures ({len(slow) / len(lat):.1%}) took 250 ms or more; they were sent in second(s) "
            f"{', '.join(map(str, seconds_with_slow[:20])) or '-'} of the run"]


def bench_memory(base: Settings, tmp: Path, bundle: Path, products: int) -> list[str]:
    settings = base.replace(app_id=f"bench-mem-{uuid.uuid4().hex[:6]}", topic_prefix=f"me{uuid.uuid4().hex[:6]}.")
    create_topics(settings)
    total = produce(settings, damage_events(settings, products, 1))
    topics = [settings.topic_prefix + "shipments", settings.topic_prefix + "damage-reports"]
    worker = WorkerProcess(settings.replace(model_path=str(bundle), state_dir=str(tmp / "memory")), tmp / "memory.log")
    worker.start()
    idle_rss = worker.rss_mib()
    peak = idle_rss
    started = time.monotonic()
    try:
        while committed_total(settings, topics) < total:
            peak = max(peak, worker.rss_mib())
            time.sleep(1.0)
        filled = time.monotonic() - started
        loaded_rss = worker.rss_mib()
        worker.stop()
        disk = sum(f.stat().st_size for f in (tmp / "memory").rglob("*") if f.is_file()) / 2**20
        restart = worker.start()
        restarted_rss = worker.rss_mib()
    finally:
        worker.stop()
    return [f"memory: {products:,} products in damage_stats and products (one shipment or report each)",
            f"worker RSS: {idle_rss:,.0f} MiB empty (model loaded), {loaded_rss:,.0f} MiB with {products:,} products "
            f"(peak while filling {peak:,.0f} MiB); RocksDB on disk {disk:,.0f} MiB; filled in {filled:,.0f} s",
            f"restart from local RocksDB (SIGTERM, start, until ready): {restart:.1f} s; RSS after restart "
            f"{restarted_rss:,.0f} MiB"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["stats", "scoring", "latency", "memory", "contention", "all"])
    parser.add_argument("--bundle", type=Path, help="model bundle (default: train a small one)")
    parser.add_argument("--products", type=int, default=20_000, help="stats: products")
    parser.add_argument("--per-product", type=int, default=10, help="stats: events per product")
    parser.add_argument("--score-products", type=int, default=3000, help="scoring: products")
    parser.add_argument("--rate", type=float, default=50.0, help="latency: captures per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="latency: duration")
    parser.add_argument("--memory-products", type=int, default=1_000_000, help="memory: products")
    args = parser.parse_args()
    command = "python bench/bench_worker.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="packwise-bench-") as tmp_name:
        tmp = Path(tmp_name)
        broker = LocalBroker(tmp / "kafka", free_port(), free_port(), heap="1g")
        broker.start(echo=False)
        BROKER_PID.append(int(broker.pid_file.read_text().split()[0]))
        try:
            bundle = args.bundle
            if bundle is None:
                bundle = tmp / "bundle"
                subprocess.run([sys.executable, "-m", "streams.cli", "train", "--out", str(bundle), "--products", "1500",
                                "--epochs", "2", "--seed", "5"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
            # worker knobs (PACKWISE_BATCH_WITHIN_S, PACKWISE_SCORING_THREADS, ...) come from the environment
            base = Settings.from_env().replace(bootstrap_servers=broker.bootstrap, partitions=6, session_timeout_s=10.0,
                                               topic_prefix="", app_id="packwise")
            knobs = {name: value for name, value in settings_env(base).items() if name in os.environ}
            if knobs:
                command = " ".join(f"{k}={v}" for k, v in sorted(knobs.items())) + " " + command
            runs = {"stats": lambda: bench_stats(base, tmp, bundle, args.products, args.per_product),
                    "scoring": lambda: bench_scoring(base, tmp, bundle, args.score_products),
                    "latency": lambda: bench_latency(base, tmp, bundle, args.rate, args.seconds),
                    "memory": lambda: bench_memory(base, tmp, bundle, args.memory_products),
                    "contention": lambda: bench_contention(bundle)}
            for name in (runs if args.which == "all" else [args.which]):
                record(f"worker benchmark: {name}", runs[name](), command)
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
