"""CPU the local broker (streams/broker.py) burns at rest: its metadata no-op record every 500 ms (Kafka's
default) against every 10 s (what packwise writes), alternating A B B A on fresh brokers, each read for 30 s
after it has run 60 s (a broker just started is still compiling).

    .venv/bin/python bench/broker_idle.py      # about 6 minutes
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from streams.broker import LocalBroker, free_port  # noqa: E402

WRITTEN = "metadata.max.idle.interval.ms=10000"
packwise_properties = LocalBroker.server_properties


def with_interval(ms: int):
    def properties(self: LocalBroker) -> str:
        text = packwise_properties(self)
        assert WRITTEN in text, "the local broker no longer sets the no-op interval this bench compares"
        return text.replace(WRITTEN, f"metadata.max.idle.interval.ms={ms}")
    return properties


def at_rest(ms: int, warm_s: float = 60.0, read_s: float = 30.0) -> float:
    LocalBroker.server_properties = with_interval(ms)
    folder = Path(tempfile.mkdtemp(prefix="packwise-idle-"))
    broker = LocalBroker(folder, free_port(), free_port(), heap="1g")
    status, _ = broker.start(echo=False)
    process = psutil.Process(status.pid)
    try:
        time.sleep(warm_s)
        before, started = sum(process.cpu_times()[:2]), time.monotonic()
        time.sleep(read_s)
        return (sum(process.cpu_times()[:2]) - before) / (time.monotonic() - started)
    finally:
        broker.stop()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    readings: dict[int, list[float]] = {500: [], 10_000: []}
    for ms in (500, 10_000, 10_000, 500):
        readings[ms].append(at_rest(ms))
        print(f"metadata.max.idle.interval.ms={ms}: {readings[ms][-1]:.3f} cores at rest", flush=True)
    print("; ".join(f"{ms} ms: {', '.join(f'{r:.3f}' for r in values)} cores" for ms, values in readings.items()))


if __name__ == "__main__":
    main()
