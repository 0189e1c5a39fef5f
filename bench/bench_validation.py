"""CPU the worker spends validating each capture's images (streams/validation.py), against Pillow's open() and
verify() on the same views, which the worker used for PNGs before its own chunk check. Passes alternate, in one
process, so that a machine getting slower weighs on both alike; appends to bench/RESULTS-worker.md.

    .venv/bin/python bench/bench_validation.py [--captures 300 --passes 7]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_worker import capture_messages, record  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.validation import _image  # noqa: E402


def pillow_verify(view: str, media_type: str, data: bytes) -> None:
    with Image.open(io.BytesIO(data), formats=("PNG",)) as image:
        image.size  # noqa: B018 (read, as the size check did)
        image.verify()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captures", type=int, default=300)
    parser.add_argument("--passes", type=int, default=7)
    args = parser.parse_args()
    _, captures = capture_messages(Settings(), args.captures, seed=41)
    views = [(v["view"], v["media_type"], v["image"]) for c in captures for v in c["views"]]
    timings: dict[str, list[float]] = {"streams.validation": [], "Pillow open() + verify()": []}
    for _ in range(args.passes):
        for name, check in (("streams.validation", _image), ("Pillow open() + verify()", pillow_verify)):
            started = time.process_time()
            for view in views:
                check(*view)
            timings[name].append((time.process_time() - started) * 1e6 / len(captures))
    ours, pillow = (statistics.median(v) for v in timings.values())
    record("image validation per capture", [
        f"{len(captures)} captures of the generated world, {len(views)} PNG views ({len(views) / len(captures):.1f} "
        f"per capture, {statistics.mean(len(v[2]) for v in views):,.0f} bytes each); CPU time, {args.passes} "
        "alternating passes",
        *(f"{name}: median {statistics.median(v):.1f} µs per capture (passes: {', '.join(f'{x:.1f}' for x in v)})"
          for name, v in timings.items()),
        f"Pillow / ours: {pillow / ours:.1f}x"], " ".join(["python bench/bench_validation.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
