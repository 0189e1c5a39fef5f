"""Seconds from a worker's process start, after a clean stop, to its first event taken (its
packwise_events_total > 0), over N restarts on a broker of its own; prints each and the median.

    .venv/bin/python bench/first_event.py --bundle DIR [--restarts 7] [--log-level INFO]

The worker's log (its start-up timeline: worker_starting, Faust's recovery, Ready) is left in --work
(default: a new temporary folder), so the time can be read phase by phase."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    from bench_worker import SERDE, events_consumed, produce

    from streams.broker import LocalBroker, free_port
    from streams.settings import Settings
    from streams.topics import create_topics
    from streams.workers import WorkerProcess

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--restarts", type=int, default=7)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="packwise-first-event-"))
    broker = LocalBroker(work / "kafka", free_port(), free_port(), heap="512m")
    broker.start(echo=False)
    times = []
    try:
        settings = Settings(bootstrap_servers=broker.bootstrap, topic_prefix="p.", app_id="first-event",
                            partitions=6, state_dir=str(work / "state"), model_path=str(args.bundle),
                            web_port=free_port(), log_level=args.log_level)
        create_topics(settings)
        worker = WorkerProcess(settings, work / "worker.log")
        worker.start()
        worker.stop()
        topics = [settings.topic_prefix + "shipments"]
        for i in range(args.restarts):
            record = {"event_id": str(uuid.uuid4()), "product_id": f"P{i}", "shipment_id": f"S{i}",
                      "package_type": "box", "marketplace": "NA", "fulfillment_center": "FC-SEA1",
                      "shipped_at": datetime.now(timezone.utc)}
            produce(settings, [(settings.topic_prefix + "shipments", f"P{i}", SERDE.encode("shipment", record))])
            started = time.monotonic()
            worker.start(wait_ready_s=None)
            while True:
                try:
                    if events_consumed(settings, topics) > 0:
                        break
                except OSError:  # its web server is not up yet
                    pass
                if time.monotonic() - started > 300:
                    raise RuntimeError(f"no event taken within 300 s (log {worker.log_path})")
                time.sleep(0.05)
            times.append(time.monotonic() - started)
            worker.stop()
    finally:
        broker.stop()
    print(f"first event after a clean stop, s: {', '.join(f'{t:.2f}' for t in times)}; "
          f"median {statistics.median(times):.2f}; worker log {work / 'worker.log'}")


if __name__ == "__main__":
    main()
