"""Inference throughput of a packwise bundle on this machine's CPUs.

Each capture is a full tunnel pass (all its PNG views, decoded) plus its catalog record; a batch goes
through `Bundle.predict` exactly as the streams layer calls it. Prints medians over repeats and writes
bench/RESULTS-inference.md.

    .venv/bin/python bench/bench_inference.py            # trains a throwaway bundle of the default architecture
    .venv/bin/python bench/bench_inference.py --bundle DIR
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.bundle import load_bundle  # noqa: E402
from models.features import decode_views  # noqa: E402
from models.train import set_threads  # noqa: E402
from models.world import World, WorldConfig, capture_record, catalog_record  # noqa: E402

BATCH_SIZES = (1, 16, 64)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, help="bundle to benchmark (default: train a small one of the default "
                                                    "architecture; weights do not change the speed)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS-inference.md"))
    args = parser.parse_args()
    set_threads()
    if args.bundle is None:  # trained in a child process, so the peak RSS below is inference alone
        args.bundle = Path(tempfile.mkdtemp()) / "bundle"
        subprocess.run([sys.executable, "-m", "models.cli", "train", "--out", str(args.bundle), "--products", "600",
                        "--epochs", "1"], check=True, cwd=Path(__file__).resolve().parents[1])
    bundle = load_bundle(args.bundle)
    world = World.generate(WorldConfig(seed=4242, n_products=max(BATCH_SIZES) * 2))
    rng = np.random.default_rng(0)
    catalogs = [catalog_record(p) for p in world.products]
    captures = [capture_record(p, rng) for p in world.products]
    views = sum(len(c["views"]) for c in captures) / len(captures)

    started = time.perf_counter()
    for capture in captures:
        decode_views(capture, bundle.image_size)
    decode_ms = (time.perf_counter() - started) / len(captures) * 1000

    rows = []
    for batch in BATCH_SIZES:
        bundle.predict(catalogs[:batch], captures[:batch])  # warm-up
        seconds = []
        for r in range(args.repeats):
            start = (r * batch) % (len(captures) - batch + 1)
            t0 = time.perf_counter()
            bundle.predict(catalogs[start:start + batch], captures[start:start + batch])
            seconds.append(time.perf_counter() - t0)
        median = statistics.median(seconds)
        rows.append((batch, batch / median, median * 1000))
        print(f"batch {batch:3d}: {batch / median:7.1f} captures/s, {median * 1000:7.1f} ms per batch (median of "
              f"{args.repeats})")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load = os.getloadavg()[0]  # the cores may be shared: say how busy the machine was
    print(f"PNG decode {decode_ms:.2f} ms per capture ({views:.1f} views); peak RSS {peak_mb:.0f} MiB")

    import torch

    cores = len(os.sched_getaffinity(0))
    table = "\n".join(f"| {b} | {c:.1f} | {ms:.1f} |" for b, c, ms in rows)
    args.out.write_text(
        f"# Inference benchmark\n\nCommand: `.venv/bin/python bench/bench_inference.py "
        f"{' '.join(sys.argv[1:])}".rstrip() + "`\n\n"
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Machine: {cpu_model()}, {cores} cores available to "
        f"the process, torch {torch.__version__} with {torch.get_num_threads()} threads, no GPU. Bundle "
        f"`{bundle.version}` ({bundle.config['network']['modality']}, backbone "
        f"`{bundle.config['network']['backbone']}`, {bundle.image_size}x{bundle.image_size} views).\n\n"
        f"A capture is one catalog record plus one tunnel pass ({views:.1f} PNG views on average), scored through "
        f"`Bundle.predict` including PNG decoding and tokenization. Medians over {args.repeats} repeats.\n\n"
        f"| batch size | captures/s | ms per batch |\n|---|---|---|\n{table}\n\n"
        f"PNG decoding alone: {decode_ms:.2f} ms per capture. Peak RSS: {peak_mb:.0f} MiB. Load average (1 min) "
        f"at the end of the run: {load:.2f} on {cores} cores.\n\n"
        f"Targets: >= 200 captures/s at batch 64, < 20 ms at batch 1.\n")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
