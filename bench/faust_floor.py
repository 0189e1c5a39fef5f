"""A bare Faust worker: one agent reading batches (take_events) from the given topics and decoding each
message, with no output; with FLOOR_TABLE=1 it also writes each message's product into a RocksDB table
(one small JSON value, as the statistics path's per-product write). What a Faust worker costs per message before any packwise work; run
by `bench_worker.py stats` beside the plain aiokafka loop and the packwise worker.

    FLOOR_TOPICS=a,b FLOOR_EXPECTED=50000 FLOOR_BOOTSTRAP=127.0.0.1:9092 FLOOR_DATADIR=/tmp/x \\
        FLOOR_RESULT=/tmp/x/result FLOOR_FAST_DELIVERY=1 python bench/faust_floor.py worker -l warn

Writes `<messages> <seconds>` (first batch to the last message) to FLOOR_RESULT and exits (Faust takes over
stdout for its logs).
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
from streams.app import partition_context  # noqa: E402
from streams.serde import Serde  # noqa: E402

topics = os.environ["FLOOR_TOPICS"].split(",")
expected = int(os.environ["FLOOR_EXPECTED"])
with_table = os.environ.get("FLOOR_TABLE") == "1"
app = faust.App(f"faust-floor-{uuid.uuid4().hex[:8]}", broker=f"kafka://{os.environ['FLOOR_BOOTSTRAP']}",
                store="rocksdb://" if with_table else "memory://", datadir=os.environ["FLOOR_DATADIR"], web_enabled=False,
                consumer_auto_offset_reset="earliest", topic_partitions=int(os.environ.get("FLOOR_PARTITIONS", "6")))
if os.environ.get("FLOOR_FAST_DELIVERY") == "1":
    delivery.install(app)
serde = Serde()
table = app.Table("floor", key_type=str) if with_table else None
source = app.topic(*topics, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


@app.agent(source)
async def floor(stream: faust.StreamT) -> None:
    seen, started = 0, None
    async for events in stream.take_events(500, within=0.01):
        started = started or time.monotonic()
        for event in events:
            record = serde.decode("shipment" if event.message.topic.endswith("shipments") else "damage_report",
                                  event.message.value)
            if table is not None:
                with partition_context(event.message.topic, event.message.partition):
                    table[record["product_id"]] = {"shipments": [1, 0, 0, 0], "damages": [0, 0, 0, 0],
                                                   "seen": {"shipment": [event.message.partition, event.message.offset]},
                                                   "recent": [record["event_id"]]}
        seen += len(events)
        if seen >= expected:
            Path(os.environ["FLOOR_RESULT"]).write_text(f"{seen} {time.monotonic() - started:.3f}")
            os._exit(0)


if __name__ == "__main__":
    app.main()
