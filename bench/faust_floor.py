"""A bare Faust worker: one agent reading batches (take_events) from the given topics and decoding each
message, with no tables and no output. What a Faust worker costs per message before any packwise work; run
by `bench_worker.py stats` beside the plain aiokafka loop and the packwise worker.

    FLOOR_TOPICS=a,b FLOOR_EXPECTED=50000 FLOOR_BOOTSTRAP=127.0.0.1:9092 FLOOR_DATADIR=/tmp/x \\
        FLOOR_FAST_DELIVERY=1 python bench/faust_floor.py worker -l warn

Prints `RESULT <messages> <seconds>` (first batch to the last message) and exits.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import faust  # noqa: E402

from streams import delivery  # noqa: E402
from streams.serde import Serde  # noqa: E402

topics = os.environ["FLOOR_TOPICS"].split(",")
expected = int(os.environ["FLOOR_EXPECTED"])
app = faust.App(f"faust-floor-{uuid.uuid4().hex[:8]}", broker=f"kafka://{os.environ['FLOOR_BOOTSTRAP']}",
                store="memory://", datadir=os.environ["FLOOR_DATADIR"], web_enabled=False,
                consumer_auto_offset_reset="earliest")
if os.environ.get("FLOOR_FAST_DELIVERY") == "1":
    delivery.install(app)
serde = Serde()
source = app.topic(*topics, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


@app.agent(source)
async def floor(stream: faust.StreamT) -> None:
    seen, started = 0, None
    async for events in stream.take_events(500, within=0.01):
        started = started or time.monotonic()
        for event in events:
            serde.decode("shipment" if event.message.topic.endswith("shipments") else "damage_report",
                         event.message.value)
        seen += len(events)
        if seen >= expected:
            print(f"RESULT {seen} {time.monotonic() - started:.3f}", flush=True)
            os._exit(0)


if __name__ == "__main__":
    app.main()
