"""Sum py-spy's raw stacks (`py-spy record -f raw`, as `bench_worker.py latency --profile DIR` writes them):
the share of samples each function is on the stack for (inclusive) and at its top (self).

    .venv/bin/python bench/profile_stacks.py DIR/worker.raw [--top 40]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# py-spy names a frame "function (/path/to/file.py:line)": the path shortened to the package, the line dropped,
# so one function's lines add up
_FRAME = re.compile(r" \((?:.*/(?:site-packages|lib/python3\.\d+)/|.*/(?=(?:streams|models|bench)/))?(.*?)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    return _FRAME.sub(lambda m: f" ({m.group(1)})", frame)


def summarize(lines: list[str]) -> tuple[int, Counter, Counter]:
    """(samples, inclusive counts, self counts) of raw stack lines 'frame;frame;... COUNT'."""
    inclusive: Counter = Counter()
    own: Counter = Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";")]
        total += count
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count
    return total, inclusive, own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw", type=Path, help="py-spy raw output")
    parser.add_argument("--top", type=int, default=40, help="functions to list in each table")
    args = parser.parse_args()
    total, inclusive, own = summarize(args.raw.read_text().splitlines())
    if not total:
        raise SystemExit(f"{args.raw}: no samples (was the process busy while py-spy ran?)")
    print(f"{args.raw}: {total:,} samples")
    for title, counts in (("on the stack", inclusive), ("at the top", own)):
        print(f"\n{title}:")
        for name, count in counts.most_common(args.top):
            print(f"{100 * count / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
