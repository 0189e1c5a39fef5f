"""Land the input topics as Parquet, incrementally and idempotently: the raw material of `packwise dataset build`.
The workers' decisions are landed beside them: they say how each shipment's package type was chosen.

Layout under the dataset folder (Hive-style, so DuckDB, Spark and Trino read it as tables partitioned by date):

    landed/<topic>/event_date=YYYY-MM-DD/part-<run>-[p<process>-]<n>.parquet   a table per input topic (base name)
    manifest.json                                                               offsets per partition, files, counts

The manifest is the commit point: files are written first (each under a temporary name, then renamed), the
manifest last and atomically (write, fsync, rename). It lists every file that belongs to the dataset and the
next offset to read in every partition, so a re-run reads only newer events, and files a crashed run left
behind (not in the manifest) are deleted before anything is read again.

The lander has its own consumer: partitions are assigned explicitly and nothing is committed to any consumer
group, so it never moves the workers' offsets. With several landing processes (`--processes`), each has its
own consumer for its own share of the (topic, partition) pairs and writes its own files (the process's index
is in their names); the process that started them writes the manifest once, after all of them have finished.

Events are decoded and validated with the worker's own functions (streams/serde.py, streams/validation.py)
and its size rule, so what the worker dead-letters never enters the dataset. Where the worker's rule depends
on its clock (an event time too far ahead), the message's Kafka timestamp stands for the worker's clock: the
worker reads an event moments after it is written, and a rebuild gives the same answer as the first build.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
import uuid
from collections import Counter, defaultdict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streams.errors import PackwiseError
from streams.marketplaces import Marketplace, load_marketplaces
from streams.processor import RECORD_OVERHEAD, REJECTIONS, admit
from streams.serde import Serde
from streams.settings import Settings
from streams.topics import client_config, max_record_bytes
from streams.validation import EVENT_TIME_FIELDS, EventTimes

# Input topics (base names, streams/topics.py) and the contract each carries, in landing order
# (a dataset landed before a topic was added here has no offsets for it: the next run lands it from the start)
LANDED = {"catalog-updates": "catalog_update", "tunnel-captures": "tunnel_capture", "shipments": "shipment",
          "damage-reports": "damage_report", "test-results": "test_result",
          # the workers' own decisions: how each shipment's package type was chosen (models/dataset.py). The topic
          # is compacted, so a product's older decisions survive only in what was landed before compaction
          "pack-type-decisions": "pack_type_decision"}
TIME_FIELDS = {**EVENT_TIME_FIELDS, "pack_type_decision": "decided_at"}  # what a landed file's date is of
COMPACTED = {"catalog-updates", "pack-type-decisions"}  # a null value is a tombstone, not a dead letter
MANIFEST = "manifest.json"
LANDED_DIR = "landed"
MANIFEST_VERSION = 1
# Columns the lander adds to every record: where it was read, and the Kafka timestamp of the message
COORDINATES = (("kafka_partition", pa.int32()), ("kafka_offset", pa.int64()),
               ("kafka_timestamp", pa.timestamp("ms", tz="UTC")))
# A file is written when its (topic, date) buffer holds this many rows, or this many bytes of values: memory
# stays bounded however far behind the dataset is, and files stay large enough for columnar reads.
FLUSH_ROWS = 200_000
FLUSH_BYTES = 64 << 20
PROGRESS_EVERY = 100_000  # events between two progress lines
CONSUME_BATCH = 10_000
WRITES_QUEUED = 2  # tables built and waiting for the writer thread, at most


def arrow_type(avro: Any, named: dict[str, pa.DataType] | None = None) -> pa.DataType:
    """The Arrow type of an Avro type, as the contracts use them (derived, so the Parquet columns follow the
    contracts as they evolve). Enums are strings: Spark and Trino read them without a dictionary. `named` holds
    the named types met so far, for a later reference to one by its name."""
    named = {} if named is None else named
    if isinstance(avro, list):  # a union: ["null", T] is a nullable T
        others = [t for t in avro if t != "null"]
        if len(others) != 1:
            raise PackwiseError(f"cannot land the Avro union {avro}: only [null, T] unions are supported")
        return arrow_type(others[0], named)
    if isinstance(avro, dict):
        kind = avro["type"]
        if avro.get("logicalType") == "timestamp-millis":
            return pa.timestamp("ms", tz="UTC")
        if kind == "enum":
            result = pa.string()
        elif kind == "array":
            return pa.list_(arrow_type(avro["items"], named))
        elif kind == "record":
            result = pa.struct([pa.field(f["name"], arrow_type(f["type"], named)) for f in avro["fields"]])
        else:
            return arrow_type(kind, named)
        name = avro.get("name", "")
        named[name] = named[f"{avro.get('namespace')}.{name}"] = result
        return result
    primitive = {"string": pa.string(), "bytes": pa.binary(), "float": pa.float32(), "double": pa.float64(),
                 "int": pa.int32(), "long": pa.int64(), "boolean": pa.bool_()}
    if avro in named:
        return named[avro]
    if avro not in primitive:
        raise PackwiseError(f"cannot land the Avro type {avro!r}")
    return primitive[avro]


def arrow_schema(serde: Serde, contract: str) -> pa.Schema:
    """The Parquet schema of a landed topic: the contract's fields, then the Kafka coordinates."""
    named: dict[str, pa.DataType] = {}
    fields = [pa.field(f["name"], arrow_type(f["type"], named)) for f in serde.contract(contract).schema["fields"]]
    return pa.schema(fields + [pa.field(name, kind) for name, kind in COORDINATES])


@dataclass(frozen=True)
class Admission:
    """The worker's rules for an input message, with its limits: what is dead-lettered never lands."""

    serde: Serde
    marketplaces: Mapping[str, Marketplace]
    earliest: datetime
    ahead_s: float
    max_value_bytes: int
    # The EventTimes of the last timestamp read: messages produced together share their millisecond, and
    # building it (a datetime and a dataclass) was a tenth of the cost of admitting a shipment
    _last: list = field(default_factory=lambda: [None, None], init=False, repr=False, compare=False)

    def read(self, contract: str, key: bytes | None, value: bytes | None,
             timestamp_ms: int) -> tuple[dict | None, str]:
        """(record, "") for a message the worker accepts; (None, the code of its dead-letter reason) otherwise:
        the worker's own admit(), with the message's timestamp standing in for the worker's clock."""
        last = self._last
        if last[0] == timestamp_ms:
            times = last[1]
        else:
            times = EventTimes(self.earliest, datetime.fromtimestamp(timestamp_ms / 1000 + self.ahead_s,
                                                                     timezone.utc), self.ahead_s)
            last[0], last[1] = timestamp_ms, times
        try:
            if contract not in EVENT_TIME_FIELDS:  # an output of the workers: they wrote it, there is no rule to apply
                return self.serde.decode(contract, value), ""
            _, record = admit(contract, key, value, self.serde, self.marketplaces, times, self.max_value_bytes)
        except REJECTIONS as error:
            return None, reason_code(error)
        return record, ""


def reason_code(error: Exception) -> str:
    """A dead letter's kind, for counting: the code word its reason starts with, else the error type."""
    text = str(error)
    head = text.split(":", 1)[0]
    if isinstance(error, UnicodeDecodeError):
        return "key_not_utf8"
    return head if head and " " not in head and head.islower() else type(error).__name__


def admission_for(settings: Settings, serde: Serde) -> Admission:
    earliest = settings.event_time_earliest
    return Admission(serde, load_marketplaces(settings.marketplaces_file),
                     datetime(earliest.year, earliest.month, earliest.day, tzinfo=timezone.utc),
                     settings.event_time_max_ahead_s, max_record_bytes(settings) - RECORD_OVERHEAD)


# -- the manifest ----------------------------------------------------------------------------------------


@dataclass
class Manifest:
    """What the dataset holds: per topic and partition the next offset to land, the files, and running counts
    (events landed, dead letters skipped by reason, tombstones of catalog records and decisions, events lost to
    retention)."""

    topic_prefix: str
    offsets: dict[str, dict[str, int]] = field(default_factory=dict)  # base topic -> partition -> next offset
    files: dict[str, list[str]] = field(default_factory=dict)  # base topic -> paths relative to the dataset
    landed: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, dict[str, int]] = field(default_factory=dict)  # base topic -> reason code -> count
    tombstones: int = 0
    lost_to_retention: dict[str, int] = field(default_factory=dict)
    runs: list[dict] = field(default_factory=list)

    @classmethod
    def load(cls, folder: Path, topic_prefix: str) -> "Manifest":
        path = folder / MANIFEST
        if not path.exists():
            return cls(topic_prefix)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise PackwiseError(f"{path} cannot be read as a dataset manifest ({error}): restore it, or build into "
                                "an empty folder") from None
        if data.get("version") != MANIFEST_VERSION:
            raise PackwiseError(f"{path} has manifest version {data.get('version')!r}; this packwise writes "
                                f"version {MANIFEST_VERSION}: build into an empty folder")
        if data["topic_prefix"] != topic_prefix:
            raise PackwiseError(f"{folder} holds the topics of prefix {data['topic_prefix']!r}, not "
                                f"{topic_prefix!r} (PACKWISE_TOPIC_PREFIX): use one folder per prefix")
        data.pop("version")
        return cls(**data)

    def save(self, folder: Path) -> None:
        """Atomically: a reader sees the old manifest or the new one, never a part."""
        body = json.dumps({"version": MANIFEST_VERSION, **self.__dict__}, indent=1, sort_keys=True)
        _write_atomically(folder / MANIFEST, body.encode("utf-8"))


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_orphans(folder: Path, manifest: Manifest) -> int:
    """Delete files under landed/ that the manifest does not list: a crashed run's output, which the next run
    lands again from the manifest's offsets."""
    listed = {path for paths in manifest.files.values() for path in paths}
    removed = 0
    for path in sorted((folder / LANDED_DIR).rglob("*")) if (folder / LANDED_DIR).exists() else []:
        if path.is_file() and path.relative_to(folder).as_posix() not in listed:
            path.unlink()
            removed += 1
    return removed


# -- landing ---------------------------------------------------------------------------------------------


class Buffer:
    """The records of one (topic, event date) waiting to be written, column by column. A list of records (the
    capture's views) is kept flat, a list per field and the offsets where each record's items start: Arrow
    builds it from those without visiting a Python dict per item, a third of the cost of landing a capture."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.names = [f.name for f in schema][:-len(COORDINATES)]
        self.nested = {f.name: [child.name for child in f.type.value_type] for f in schema
                       if pa.types.is_list(f.type) and pa.types.is_struct(f.type.value_type)}
        self.flat = [name for name in self.names if name not in self.nested]
        self.columns: dict[str, list] = {f.name: [] for f in schema if f.name not in self.nested}
        self.items = {name: ([0], {child: [] for child in children}) for name, children in self.nested.items()}
        self.rows = 0
        self.bytes = 0

    def add(self, record: dict, partition: int, offset: int, timestamp_ms: int, size: int) -> None:
        columns = self.columns
        for name in self.flat:
            columns[name].append(record[name])
        for name, (offsets, children) in self.items.items():
            values = record[name]
            for child, column in children.items():
                column.extend([item[child] for item in values])
            offsets.append(offsets[-1] + len(values))
        columns["kafka_partition"].append(partition)
        columns["kafka_offset"].append(offset)
        columns["kafka_timestamp"].append(timestamp_ms)
        self.rows += 1
        self.bytes += size

    def table(self) -> pa.Table:
        arrays = {name: pa.array(values, type=self.schema.field(name).type) for name, values in self.columns.items()}
        for name, (offsets, children) in self.items.items():
            item_type = self.schema.field(name).type.value_type
            items = pa.StructArray.from_arrays(
                [pa.array(children[child.name], type=child.type) for child in item_type], fields=list(item_type))
            arrays[name] = pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), items)
        return pa.table({f.name: arrays[f.name] for f in self.schema}, schema=self.schema)


# Encoded images do not compress: zstd over them costs CPU for nothing; every other column is zstd
UNCOMPRESSED = {"views.list.element.image"}


def compression(schema: pa.Schema) -> dict[str, str]:
    """Per leaf column of `schema` (Parquet's dotted path), its codec."""
    return {path: "NONE" if path in UNCOMPRESSED else "ZSTD" for path in _leaf_paths(schema)}


def _leaf_paths(schema: pa.Schema) -> list[str]:
    def walk(prefix: str, kind: pa.DataType) -> list[str]:
        if pa.types.is_list(kind):
            return walk(prefix + ".list.element", kind.value_type)
        if pa.types.is_struct(kind):
            return [p for child in kind for p in walk(f"{prefix}.{child.name}", child.type)]
        return [prefix]
    return [p for f in schema for p in walk(f.name, f.type)]


@dataclass
class LandingReport:
    landed: Counter = field(default_factory=Counter)  # base topic -> events landed this run
    dead_letters: Counter = field(default_factory=Counter)  # base topic -> events skipped this run
    reasons: Counter = field(default_factory=Counter)  # (base topic, reason code) -> events skipped this run
    tombstones: int = 0
    lost_to_retention: Counter = field(default_factory=Counter)
    files: int = 0
    orphans_removed: int = 0
    seconds: float = 0.0

    @property
    def events(self) -> int:
        return sum(self.landed.values()) + sum(self.dead_letters.values()) + self.tombstones


class Progress:
    """A plain line every PROGRESS_EVERY events (into a pipe or a log as on a terminal: a line each, no redraws)."""

    def __init__(self, total: int, show: bool, every: int = PROGRESS_EVERY) -> None:
        self.total, self.show, self.every = total, show, every
        self.started = time.perf_counter()
        self.next_line = every
        self.shown = -1

    def update(self, done: int, force: bool = False) -> None:
        if not self.show or (done < self.next_line and not force) or done == self.shown:
            return
        self.shown = done
        self.next_line = (done // self.every + 1) * self.every
        seconds = time.perf_counter() - self.started
        share = f" of {self.total:,} ({done / self.total:.0%})" if self.total else ""
        print(f"landing: {done:,} events{share} in {seconds:.0f} s, {done / max(seconds, 1e-9):,.0f}/s",
              file=sys.stderr, flush=True)


def land(settings: Settings, folder: Path, show_progress: bool = True, serde: Serde | None = None,
         admission: Admission | None = None, topics: Mapping[str, str] = LANDED, processes: int = 1) -> LandingReport:
    """Land every input event written since the last run, up to the end offsets found at the start, and
    commit the manifest. Safe to repeat and to interrupt: an interrupted run leaves the previous manifest.

    processes > 1: the (topic, partition) pairs to read are shared out among that many processes (at most one
    per pair): this one and processes started for the run, each with its own consumer (assigned partitions,
    nothing committed) and its own files. This one waits for all of them to finish, their files fsynced, then
    writes the manifest once; one that fails fails the run, and nothing is committed."""
    started = time.perf_counter()
    children = _Children(processes - 1) if processes > 1 else None  # they load their modules meanwhile
    try:
        return _land(settings, folder, show_progress, serde, admission, topics, processes, children, started)
    finally:
        if children is not None:
            children.stop()


def _land(settings: Settings, folder: Path, show_progress: bool, serde: Serde | None, admission: Admission | None,
          topics: Mapping[str, str], processes: int, children: _Children | None, started: float) -> LandingReport:
    folder.mkdir(parents=True, exist_ok=True)
    manifest = Manifest.load(folder, settings.topic_prefix)
    report = LandingReport(orphans_removed=remove_orphans(folder, manifest))
    given_serde = serde
    serde = serde or Serde.for_settings(settings)
    admission = admission or admission_for(settings, serde)
    run = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]

    consumer = Consumer(_consumer_config(settings))
    try:
        plan, ends = _plan(consumer, settings, manifest, report, topics)
        next_offsets = dict(plan)
        progress = Progress(sum(ends[tp] - plan[tp] for tp in plan), show_progress)
        shares = _shares(plan, ends, topics, processes)
        if len(shares) <= 1:
            new_files = _consume(consumer, settings, folder, run, serde, admission, plan, ends, next_offsets,
                                 report, progress, topics)
        else:
            new_files = _land_in_processes(consumer, settings, folder, run, serde, given_serde, admission, children,
                                           shares, ends, next_offsets, report, progress, topics)
    finally:
        consumer.close()
    _fsync_dir(folder)
    for (base, partition), offset in next_offsets.items():
        manifest.offsets.setdefault(base, {})[str(partition)] = offset
    for base, paths in new_files.items():
        manifest.files.setdefault(base, []).extend(paths)
    for base, count in report.landed.items():
        manifest.landed[base] = manifest.landed.get(base, 0) + count
    manifest.tombstones += report.tombstones
    for base, count in report.lost_to_retention.items():
        manifest.lost_to_retention[base] = manifest.lost_to_retention.get(base, 0) + count
    for (base, code), count in report.reasons.items():
        per_topic = manifest.dead_letters.setdefault(base, {})
        per_topic[code] = per_topic.get(code, 0) + count
    report.seconds = time.perf_counter() - started
    manifest.runs.append({"run": run, "events": report.events, "landed": dict(report.landed),
                          "dead_letters": sum(report.dead_letters.values()), "files": report.files,
                          "seconds": round(report.seconds, 3)})
    manifest.save(folder)
    return report


def _consumer_config(settings: Settings) -> dict:
    # group.id is required by librdkafka even with assign(); nothing is ever committed under it
    return client_config(settings, **{
        "group.id": f"{settings.app_id}-dataset", "enable.auto.commit": False, "enable.auto.offset.store": False,
        "enable.partition.eof": True, "auto.offset.reset": "earliest", "fetch.max.bytes": 64 << 20,
        "max.partition.fetch.bytes": 16 << 20, "queued.max.messages.kbytes": 256 << 10})


def default_processes() -> int:
    """Landing processes when none is asked for: one per core this process may run on, less one (for the
    broker, often on the same machine, and the threads writing the files), and at least one. On 2 cores, with
    the broker beside it, one process lands faster than two (bench/RESULTS-dataset.md)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


# What landing one event costs, relative to a non-capture event (captures: the worker's image checks, the
# image bytes): how the partitions are weighed when they are shared out among processes
COST = {"tunnel-captures": 10}


def _shares(starts: dict[tuple[str, int], int], ends: dict[tuple[str, int], int], topics: Mapping[str, str],
            processes: int) -> list[dict[tuple[str, int], int]]:
    """The (topic, partition) pairs with events to land, shared out among at most `processes` processes,
    disjoint, balanced by the work they hold (heaviest first, each to the least loaded share), each with
    its start offsets. Pairs with nothing to land go to no share (their offset stays as it is)."""
    pending = sorted((tp for tp in starts if starts[tp] < ends[tp]),
                     key=lambda tp: (-(ends[tp] - starts[tp]) * COST.get(tp[0], 1), list(topics).index(tp[0]), tp[1]))
    count = max(1, min(processes, len(pending)))
    shares: list[dict[tuple[str, int], int]] = [{} for _ in range(count)]
    loads = [0] * count
    for tp in pending:
        least = loads.index(min(loads))
        shares[least][tp] = starts[tp]
        loads[least] += (ends[tp] - starts[tp]) * COST.get(tp[0], 1)
    return [share for share in shares if share]


class _ChildProgress:
    """A landing process's count of events read, sent to its parent (which prints the progress lines) at most
    a few times a second."""

    def __init__(self, send: Callable[[tuple], None]) -> None:
        self.send, self.sent_at = send, 0.0

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.sent_at >= 0.5:
            self.sent_at = now
            self.send(("progress", done))


def _child() -> None:
    """A landing process (`python -c`, started by _Children): reads the parent's sys.path then its
    share from stdin, lands it with its own consumer into its own files (the run's name and its index in every
    file name), fsyncs them, and reports its offsets, files and counts to stdout, which is kept for that."""
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print cannot corrupt what the parent reads

    def send(message: tuple) -> None:
        pickle.dump(message, channel, protocol=pickle.HIGHEST_PROTOCOL)
        channel.flush()

    try:
        payload = pickle.load(sys.stdin.buffer)
        if payload is None:  # released: the run had no share for it
            return
        index, settings, folder, run, serde, limits, starts, ends, topics = payload
        serde = serde or Serde.for_settings(settings)
        admission = Admission(serde, *limits)
        report = LandingReport()
        next_offsets = dict(starts)
        consumer = Consumer(_consumer_config(settings))
        try:
            new_files = _consume(consumer, settings, folder, run, serde, admission, starts, ends, next_offsets,
                                 report, _ChildProgress(send), topics, tag=f"p{index}-")
        finally:
            consumer.close()
        send(("done", (next_offsets, new_files, report)))
    except BaseException as error:  # noqa: BLE001 - reported to the parent, which fails the run
        kind = "" if isinstance(error, PackwiseError) else f"{type(error).__name__}: "
        send(("failed", f"{kind}{error}"))
        raise SystemExit(1) from None
    finally:
        channel.close()


class _Children:
    """The other landing processes of a run. They are started first, so that they load their modules while this
    one plans; each is then given a share of the partitions, or released (nothing left for it). A thread per
    child reads its reports (progress, result, failure). Also this process's progress, as it lands share 0."""

    def __init__(self, count: int) -> None:
        import queue
        import subprocess
        import threading

        self.messages: queue.Queue = queue.Queue()
        self.processes: dict[int, subprocess.Popen] = {}
        self.assigned: set[int] = set()
        self.results: dict[int, tuple] = {}
        self.ended: set[int] = set()
        self.counts = [0] * (count + 1)
        self.progress: Progress | None = None
        for index in range(1, count + 1):
            child = subprocess.Popen([sys.executable, "-c", "import pickle, sys; sys.path[:0] = [p for p in "
                                      "pickle.load(sys.stdin.buffer) if p not in sys.path]; "
                                      "from streams.landing import _child; _child()"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            self.processes[index] = child
            threading.Thread(target=self._read, args=(index, child.stdout), daemon=True).start()
            pickle.dump(list(sys.path), child.stdin)
            child.stdin.flush()

    def assign(self, index: int, payload: tuple | None) -> None:
        """Give child `index` its share (None: release it, it ends without landing anything)."""
        child = self.processes[index]
        if payload is not None:
            self.assigned.add(index)
        try:
            pickle.dump(payload, child.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            child.stdin.close()
        except BrokenPipeError:
            raise PackwiseError(f"landing process {index} ended (exit code {child.wait()}) before it was given its "
                                "share; nothing was committed, run it again") from None

    def _read(self, index: int, stream: Any) -> None:
        try:
            while True:
                self.messages.put((index, *pickle.load(stream)))
        except EOFError:
            pass
        except Exception as error:  # noqa: BLE001 - a torn message: the child died mid-write
            self.messages.put((index, "failed", f"its report could not be read ({type(error).__name__}: {error})"))
        self.messages.put((index, "ended", None))

    def update(self, done: int, force: bool = False) -> None:
        """This process's own count (it lands share 0): take in what the children said meanwhile, and fail
        at once if one of them failed."""
        self.counts[0] = done
        self._take(timeout=None)
        self.progress.update(sum(self.counts))  # the last line comes once every process is done

    def wait(self) -> None:
        """Until every child given a share has ended, having reported its result; raises if one did not."""
        while not self.assigned <= self.ended:
            self._take(timeout=1.0)
            self.progress.update(sum(self.counts))

    def _take(self, timeout: float | None) -> None:
        import queue

        while True:
            try:
                index, kind, payload = (self.messages.get(timeout=timeout) if timeout
                                        else self.messages.get_nowait())
            except queue.Empty:
                return
            timeout = None  # one message waited for; then only what is already there
            if kind == "progress":
                self.counts[index] = payload
            elif kind == "done":
                self.results[index] = payload
            elif kind == "failed":
                raise PackwiseError(f"landing process {index} failed: {payload}; nothing was committed, run it "
                                    "again")
            else:
                self.ended.add(index)
                if index in self.assigned and index not in self.results:
                    code = self.processes[index].wait()
                    raise PackwiseError(f"landing process {index} ended (exit code {code}) without reporting; "
                                        "nothing was committed, run it again")

    def stop(self) -> None:
        """Terminate the children still running (after a failure, or never given a share) and reap them all."""
        for child in self.processes.values():
            if child.poll() is None and not (self.assigned <= self.ended and child.stdin.closed):
                child.terminate()
        for child in self.processes.values():
            if not child.stdin.closed:
                try:
                    child.stdin.close()
                except OSError:
                    pass
            child.wait()


def _land_in_processes(consumer: Consumer, settings: Settings, folder: Path, run: str, serde: Serde,
                       given_serde: Serde | None, admission: Admission, children: _Children,
                       shares: list[dict[tuple[str, int], int]], ends: dict[tuple[str, int], int],
                       next_offsets: dict[tuple[str, int], int], report: LandingReport, progress: Progress,
                       topics: Mapping[str, str]) -> dict[str, list[str]]:
    """Land the first share here, with `consumer`, and each other share in one of `children`; merge what they
    landed into `next_offsets` and `report`; the new files per topic. Any failure raises, and the caller
    stops the children and writes no manifest.

    The children are fresh interpreters (subprocess), not forks: a fork would inherit librdkafka's and
    Arrow's threads half-copied, and multiprocessing's spawn would re-import the caller's main script."""
    limits = (admission.marketplaces, admission.earliest, admission.ahead_s, admission.max_value_bytes)
    # a serde with a registry holds a client: each child then builds its own from the settings
    child_serde = given_serde if given_serde is not None and given_serde.registry_url is None else None
    children.progress = progress
    for index in children.processes:
        share = shares[index] if index < len(shares) else None
        children.assign(index, None if share is None else (
            index, settings, folder, run, child_serde, limits, share, {tp: ends[tp] for tp in share}, dict(topics)))
    new_files: dict[str, list[str]] = defaultdict(list)
    for base, paths in _consume(consumer, settings, folder, run, serde, admission, shares[0], ends, next_offsets,
                                report, children, topics, tag="p0-").items():
        new_files[base].extend(paths)
    children.wait()
    for index in sorted(children.results):
        offsets, files, part = children.results[index]
        next_offsets.update(offsets)
        for base, paths in files.items():
            new_files[base].extend(paths)
        report.landed.update(part.landed)
        report.dead_letters.update(part.dead_letters)
        report.reasons.update(part.reasons)
        report.tombstones += part.tombstones
        report.files += part.files
    progress.update(sum(children.counts), force=True)
    return dict(new_files)


def _plan(consumer: Consumer, settings: Settings, manifest: Manifest, report: LandingReport,
          topics: Mapping[str, str]) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
    """(base topic, partition) -> first offset to read, and -> end offset (the high watermark now)."""
    try:
        metadata = consumer.list_topics(timeout=15)
    except KafkaException as error:
        raise PackwiseError(f"cannot reach Kafka at {settings.bootstrap_servers} ({error.args[0].str()}): start it "
                            "with `packwise kafka start` or set PACKWISE_BOOTSTRAP_SERVERS") from None
    missing = [settings.topic_prefix + base for base in topics if settings.topic_prefix + base not in metadata.topics]
    if missing:
        raise PackwiseError(f"topics missing on {settings.bootstrap_servers}: {', '.join(missing)}; create them "
                            "with `packwise topics create` (or check PACKWISE_TOPIC_PREFIX)")
    starts, ends = {}, {}
    for base in topics:
        name = settings.topic_prefix + base
        for partition in sorted(metadata.topics[name].partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(name, partition), timeout=15)
            landed = manifest.offsets.get(base, {}).get(str(partition), 0)
            if landed < low:  # deleted by retention before it was landed: say so, it cannot come back
                report.lost_to_retention[base] += low - landed
            starts[(base, partition)] = max(landed, low)
            ends[(base, partition)] = high
    return starts, ends


def _write_file(table: pa.Table, target: Path, codecs: dict[str, str]) -> None:
    """`table` as `target`, whole or not at all: written under a temporary name, fsynced, renamed."""
    tmp = target.with_name("." + target.name + ".tmp")
    # Parquet is columnar: queries of measurements never read the image bytes beside them
    pq.write_table(table, tmp, compression=codecs, row_group_size=50_000)
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, target)


def _consume(consumer: Consumer, settings: Settings, folder: Path, run: str, serde: Serde, admission: Admission,
             starts: dict[tuple[str, int], int], ends: dict[tuple[str, int], int],
             next_offsets: dict[tuple[str, int], int], report: LandingReport, progress: Any,
             topics: Mapping[str, str], tag: str = "") -> dict[str, list[str]]:
    """Land the partitions of `starts` up to `ends`; the files written per topic, each one fsynced, as are the
    folders they were renamed into. `tag` (a landing process's) keeps file names apart between processes."""
    prefix = settings.topic_prefix
    base_of = {prefix + base: base for base in topics}
    schemas = {base: arrow_schema(serde, contract) for base, contract in topics.items()}
    time_field = {base: TIME_FIELDS[contract] for base, contract in topics.items()}
    pending = {tp for tp in starts if starts[tp] < ends[tp]}
    if not pending:
        return {}
    consumer.assign([TopicPartition(prefix + base, partition, starts[(base, partition)])
                     for base, partition in sorted(pending)])
    buffers: dict[tuple[str, date], Buffer] = {}
    new_files: dict[str, list[str]] = defaultdict(list)
    folders: set[Path] = set()  # written into or created: fsynced at the end, so the renames last
    sequence = 0

    # Files are encoded, written and fsynced by a thread (Arrow and fsync release the GIL), while this one
    # goes on decoding; at most WRITES_QUEUED tables wait for it, so memory stays bounded
    writer = ThreadPoolExecutor(1, thread_name_prefix="packwise-landing-writer")
    writes: deque[Future] = deque()

    def write(base: str, day: date, buffer: Buffer) -> None:
        nonlocal sequence
        sequence += 1
        relative = Path(LANDED_DIR, base, f"event_date={day.isoformat()}", f"part-{run}-{tag}{sequence:05d}.parquet")
        target = folder / relative
        if target.parent not in folders:
            target.parent.mkdir(parents=True, exist_ok=True)
            folders.update((target.parent, target.parent.parent, folder / LANDED_DIR))
        writes.append(writer.submit(_write_file, buffer.table(), target, compression(buffer.schema)))
        while len(writes) > WRITES_QUEUED:
            writes.popleft().result()
        new_files[base].append(relative.as_posix())
        report.files += 1

    try:
        done = 0
        idle_since = time.monotonic()
        while pending:
            messages = consumer.consume(CONSUME_BATCH, timeout=1.0)
            if not messages:
                if time.monotonic() - idle_since > 60:
                    raise PackwiseError(f"no message from {settings.bootstrap_servers} for 60 s while "
                                        f"{len(pending)} partition(s) still had events to land; nothing was committed, "
                                        "run it again")
                continue
            idle_since = time.monotonic()
            for message in messages:
                error = message.error()
                base = base_of[message.topic()]
                tp = (base, message.partition())
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        if message.offset() >= ends[tp]:
                            pending.discard(tp)
                        continue
                    raise PackwiseError(f"reading {message.topic()} failed: {error.str()}")
                offset = message.offset()
                if offset >= ends[tp]:  # written after this run started: the next run lands it
                    pending.discard(tp)
                    continue
                next_offsets[tp] = offset + 1
                if offset + 1 >= ends[tp]:
                    pending.discard(tp)
                done += 1
                value = message.value()
                if value is None and base in COMPACTED:
                    report.tombstones += 1  # a product left the catalog; its past records still stand for the past
                    continue
                timestamp_ms = message.timestamp()[1]
                record, code = admission.read(topics[base], message.key(), value, timestamp_ms)
                if record is None:
                    report.dead_letters[base] += 1
                    report.reasons[(base, code)] += 1
                    continue
                day = record[time_field[base]].date()
                buffer = buffers.get((base, day))
                if buffer is None:
                    buffer = buffers[(base, day)] = Buffer(schemas[base])
                buffer.add(record, message.partition(), offset, timestamp_ms, len(value))
                report.landed[base] += 1
                if buffer.rows >= FLUSH_ROWS or buffer.bytes >= FLUSH_BYTES:
                    write(base, day, buffers.pop((base, day)))
            progress.update(done)
        for (base, day), buffer in sorted(buffers.items()):
            write(base, day, buffer)
        while writes:
            writes.popleft().result()
    finally:
        writer.shutdown(wait=True, cancel_futures=True)  # after a failure: what it wrote is an orphan
    # the renames last too: every folder written into, fsynced (concurrently, the file system joins them)
    with ThreadPoolExecutor(8, thread_name_prefix="packwise-landing-fsync") as syncing:
        list(syncing.map(_fsync_dir, sorted(folders, key=lambda p: -len(p.parts))))
    progress.update(done, force=True)
    return dict(new_files)


def landed_files(folder: Path) -> dict[str, list[Path]]:
    """Per base topic, the files the dataset's manifest lists (never a crashed run's leftovers)."""
    manifest_path = folder / MANIFEST
    if not manifest_path.exists():
        raise PackwiseError(f"{folder} has no {MANIFEST}: land the topics first (`packwise dataset build --out "
                            f"{folder}`)")
    data = json.loads(manifest_path.read_text(encoding="utf-8"))
    return {base: [folder / p for p in data["files"].get(base, [])] for base in LANDED}


def read_manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
