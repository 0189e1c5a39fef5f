"""A bare Faust worker: one agent reading batches (take_events) from the given topics and decoding each
message, with no output; with FLOOR_TABLE=1 it also writes each message's product into a RocksDB table
(one small JSON value, as the statistics path's per-product write). What a Faust worker costs per message before any packwise work; run
by `bench_worker.py stats` beside the plain aiokafka loop and the packwise worker.

    FLOOR_TOPICS=a,b FLOOR_EXPECTED=50000 FLOOR_BOOTSTRAP=127.0.0.1:9092 FLOOR_DATADIR=/tmp/x \\
        FLOOR_RESULT=/tmp/x/result FLOOR_FAST_DELIVERY=1 python bench/faust_floor.py worker -l warn

Writes `<messages> <seconds> <cpu seconds>` (first batch to the last message; the CPU is this process's,
all threads) to FLOOR_RESULT and exits (Faust takes over stdout for its logs).

No web server: Faust's `worker` command turns the web server on (`--with-web` is its default, and it
overrides `web_enabled=False` given to the App), so `--without-web` is added to the command line unless
one of the two flags is given; with `--with-web` it listens on 127.0.0.1 on a free port, never on
Faust's default 0.0.0.0:6066.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import faust  # noqa: E402
from faust.streams import _current_event  # noqa: E402

from streams import delivery  # noqa: E402
from streams.serde import Serde  # noqa: E402

topics = os.environ["FLOOR_TOPICS"].split(",")
expected = int(os.environ["FLOOR_EXPECTED"])
with_table = os.environ.get("FLOOR_TABLE") == "1"


@dataclass(frozen=True)
class _StandInMessage:
    topic: str
    partition: int


@dataclass(frozen=True)
class _StandInEvent:
    message: _StandInMessage


@contextmanager
def partition_context(topic: str, partition: int) -> Iterator[None]:
    """Route the table writes inside to `partition`: in a take_events batch Faust routes every write by the
    batch's last event, so a stand-in current event names the message's own partition (as the worker did
    with the same trick when this floor was written; kept here so the floor depends on Faust alone)."""
    stand_in = _StandInEvent(_StandInMessage(topic, partition))  # held here: Faust keeps a weak reference
    token = _current_event.set(weakref.ref(stand_in))
    try:
        yield
    finally:
        _current_event.reset(token)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


app = faust.App(f"faust-floor-{uuid.uuid4().hex[:8]}", broker=f"kafka://{os.environ['FLOOR_BOOTSTRAP']}",
                store="rocksdb://" if with_table else "memory://", datadir=os.environ["FLOOR_DATADIR"], web_enabled=False,
                web_bind="127.0.0.1", web_host="127.0.0.1", web_port=free_port(),
                consumer_auto_offset_reset="earliest", topic_partitions=int(os.environ.get("FLOOR_PARTITIONS", "6")))
fast = os.environ.get("FLOOR_FAST_DELIVERY") == "1"  # the worker's Faust shortcuts: its consumer and raw schema
if fast:
    delivery.install(app)
serde = Serde()
table = app.Table("floor", key_type=str) if with_table else None
source = (app.topic(*topics, schema=delivery.RawSchema()) if fast else
          app.topic(*topics, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"))


@app.agent(source)
async def floor(stream: faust.StreamT) -> None:
    seen, started, cpu = 0, None, 0.0
    async for events in stream.take_events(500, within=0.01):
        if started is None:
            started, cpu = time.monotonic(), time.process_time()
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
            Path(os.environ["FLOOR_RESULT"]).write_text(
                f"{seen} {time.monotonic() - started:.3f} {time.process_time() - cpu:.3f}")
            os._exit(0)


if __name__ == "__main__":
    if "worker" in sys.argv[1:] and not {"--with-web", "--without-web"} & set(sys.argv):
        sys.argv.append("--without-web")
    app.main()
