"""The Faust worker wired: topics in, the state layer, agents, the timers, topics out. No business logic lives
here: each agent reads a batch, hands it to the Processor, scores what it asks for, publishes the result,
and leaves its events to the state layer, which acknowledges them once a flush has made their effects
durable (streams/state.py).

DESIGN.md invariant 3 holds because the Processor never raises on a bad message (it returns a dead
letter instead); invariant 2 because every table-mutating agent runs with concurrency 1, the Processor
applies each event id once, and no offset is committed before the state it produced is in the changelog.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import faust
import faust.web
import prometheus_client
from faust.exceptions import ConsumerNotStarted
from faust.sensors import Monitor
from faust.sensors.prometheus import setup_prometheus_sensors

from streams import changelog, delivery, failpoints, metrics, security
from streams.errors import PackwiseError
from streams.logs import get_logger
from streams.marketplaces import load_marketplaces
from streams.processor import Incoming, Limits, Outgoing, Processor, ScoreJob, Tables, TopicNames
from streams.policy import ModelView
from streams.scoring import ScoringFailed, ScoringProcess, score_one_by_one
from streams.serde import Serde
from streams.settings import Settings
from streams.state import WIRE_TABLES, StateLayer, TableSpec, codec_for
from streams.topics import TABLES, TopicRole, topic_specs
from streams.workers import MODEL_LOADED

log = get_logger("packwise.worker")
# the contracts the worker writes: its outputs and dead letters
WORKER_WRITES = ("pack_type_decision", "relabel_trigger", "test_request", "dead_letter")
LAG_INTERVAL_S = 5.0  # how often packwise_consumer_lag is refreshed: one offsets request to the broker each time
COMMIT_CHECK_S = 0.5  # how often Faust's commit loop looks for offsets a flush has released


def broker_url(bootstrap_servers: str) -> str:
    return ";".join(f"kafka://{server.strip()}" for server in bootstrap_servers.split(","))


def create_app(settings: Settings, scorer: ScoringProcess, limits: Limits = Limits()) -> faust.App:
    app = faust.App(
        settings.app_id,
        broker=broker_url(settings.bootstrap_servers),
        broker_credentials=security.faust_credentials(settings),  # consumer, producer and admin alike
        store="packwise-rocksdb://" if settings.store == "rocksdb" else "memory://",
        datadir=str(settings.worker_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        web_host=settings.web_host,
        web_bind=settings.web_host,  # Faust binds web_bind (0.0.0.0 by default); web_host is only advertised
        web_port=settings.web_port,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger_ms=5,
        producer_max_request_size=limits.max_record_bytes,
        # aiokafka buffers 16 KB per partition by default, and a send waits while that is full: a 17 KB capture
        # then costs a round trip of its own, and a flush's changelog records trickle out a batch at a time
        producer_max_batch_size=limits.max_record_bytes,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(0.5, settings.session_timeout_s / 10),
        # events are acknowledged only by the state flush that makes their effects durable, so a commit has
        # something to send only after a flush: checking every 0.5 s (a look at the acks when nothing changed)
        # commits within half a second of each flush, where Faust's 2.8 s left the offsets up to 2.8 s behind
        # the durable state, and that much more to read again after a crash
        broker_commit_interval=COMMIT_CHECK_S,
        Monitor=Monitor if settings.faust_metrics else delivery.PerMessageQuietMonitor,
        TableManager=changelog.PromptTableManager,
    )
    changelog.install(app)
    failpoints.arm(settings.failpoint)
    if settings.faust_metrics:
        setup_prometheus_sensors(app, name_prefix="packwise_faust")  # serves /metrics, ours included
    else:
        @app.page("/metrics")
        async def metrics_page(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
            # aiohttp refuses a content_type argument with a charset in it; a header is taken as is
            return view.bytes(prometheus_client.generate_latest(),
                              headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})
    names = TopicNames.for_settings(settings)

    def raw_topic(*topic_names: str) -> faust.TopicT:
        return app.topic(*topic_names, schema=delivery.RawSchema(), partitions=settings.partitions)

    def table(name: str, help: str) -> TableSpec:
        # raw bytes both ways: Faust restores the changelog into the store byte for byte, the state layer
        # encodes and decodes (streams/state.py)
        table = app.Table(name, partitions=settings.partitions, key_type=bytes, value_type=bytes, help=help)
        return TableSpec(name, table.changelog_topic.get_topic_name(), codec_for(name), changelog.FaustStore(table),
                         cached=name not in WIRE_TABLES)

    def owned() -> set[int]:
        return {tp.partition for tp in app.consumer.assignment() if tp.topic == names.captures}

    def release(events: list[faust.EventT]) -> None:
        """Drop the reference `batches` took: the consumer may now commit past these events."""
        for event in events:
            if event.ack():
                message = event.message
                app.sensors.on_message_out(message.tp, message.offset, message)

    async def decide_changed() -> None:
        await publish(processor.decide_changed())

    sender = changelog.ProducerSender(app)
    state = StateLayer([table(name, doc) for name, doc in TABLES.items()], sender, release,
                       cache_size=settings.state_cache_size, max_dirty=settings.state_max_dirty,
                       max_dirty_bytes=settings.state_max_dirty_bytes,
                       record_limit=limits.max_value_bytes, owned=owned, before_flush=decide_changed)
    tables = Tables(**state.tables)

    async def flush_before_revoking(*_args, **_kwargs) -> None:
        await state.flush()
        state.forget(owned())

    async def forget_cached(*_args, **_kwargs) -> None:
        """Partitions moved: another worker may have written what this one cached."""
        state.forget(owned())

    app.on_partitions_revoked.connect(flush_before_revoking)
    app.on_partitions_assigned.connect(forget_cached)
    serde = Serde.for_settings(settings)
    serde.require_registered(WORKER_WRITES, "the worker")
    processor = Processor(settings, serde, load_marketplaces(settings.marketplaces_file), tables, context=state.at,
                          limits=limits, legacy_targets=scorer.legacy_targets)
    # one thread that waits on the scoring process's pipe, so the event loop never does; one, so batches
    # from the two scoring agents and the timer take turns on that pipe
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="packwise-scoring")

    async def publish(messages: list[Outgoing]) -> None:
        for message in messages:
            await sender.publish(message.topic, message.key.encode(), message.value)

    async def views_of(jobs: list[ScoreJob]) -> list[ModelView | None]:
        """The model's views of `jobs`, scored in the executor's one thread: batches submitted one after the other
        are scored back to back, in submission order."""
        if not jobs:
            return []
        loop = asyncio.get_running_loop()
        try:
            # sent from the scoring thread (a send waits while two batches wait in the scoring process), answered
            # in order; the next batch is sent while this one scores
            answer = await loop.run_in_executor(executor, scorer.submit, jobs)
            return await asyncio.wrap_future(answer)
        except ScoringFailed as error:  # one unreadable input must not sink the batch: retry one by one
            log.error("scoring_batch_failed", error=repr(error), jobs=len(jobs))
            return await loop.run_in_executor(executor, score_one_by_one, scorer.score, jobs)

    async def score(jobs: list[ScoreJob]) -> list[Outgoing]:
        return processor.apply_scores(jobs, await views_of(jobs))

    async def batches(stream: faust.StreamT, agent: str, size: int = settings.batch_size):
        """(events, batch) per take_events batch; Faust acks the events when the agent asks for the next."""
        timer = metrics.BATCH_SECONDS.labels(agent=agent)
        async for events in stream.take_events(size, within=settings.batch_within_s):
            for event in events:  # released by the flush that makes the batch's effects durable
                event.message.incref()
            # Faust's messages carry what the Processor reads of an Incoming (topic, partition, offset, key,
            # value): handed over as they are, with no copy per event
            batch: list[Incoming] = [e.message for e in events]
            for topic, count in Counter(m.topic for m in batch).items():
                metrics.EVENTS.labels(topic=topic).inc(count)
            started = time.perf_counter()
            yield events, batch
            timer.observe(time.perf_counter() - started)

    async def scored_in_background(stream: faust.StreamT, agent: str, first_stage) -> None:
        """The scoring agents' loop, pipelined: batch N+1 is read, its state updated (`first_stage`) and handed to
        the scoring thread while batch N scores, so the model goes from one batch to the next without waiting for
        Kafka, the tables, or the decisions of the batch before (applied and published here, in read order,
        while the next one scores).

        Nothing is acked early: each event of a batch keeps the reference `batches` took until the batch's
        decisions are handed to the producer and a flush has made its state durable, so the consumer
        commits no offset whose outputs are not out (a rebalance waits for it, as for any unacked event). One
        thread scores, a batch at a time; verdicts apply in read order, so a product's verdicts apply in the order
        of its captures."""
        applying: asyncio.Future | None = None  # the last batch's finish(): its views awaited, applied, published
        scoring: asyncio.Future | None = None

        async def finish(events: list[faust.EventT], out: list[Outgoing], jobs: list[ScoreJob],
                         views: asyncio.Future) -> None:
            try:
                await publish(out + processor.apply_scores(jobs, await views))
            except asyncio.CancelledError:
                raise  # shutting down: the events stay unacked and are read again after the restart
            except Exception as error:  # see fail_stop
                log.critical("worker_stopping_on_unexpected_error", agent=agent, error=repr(error), exc_info=True)
                os._exit(70)
            state.hold(events)

        try:
            async for events, batch in batches(stream, agent):
                out, jobs = first_stage(batch)
                scoring = asyncio.ensure_future(views_of(jobs))  # scored right after the batch before, if any
                if applying is not None:
                    await applying  # verdicts apply in read order
                applying, scoring = asyncio.ensure_future(finish(events, out, jobs, scoring)), None
            if applying is not None:
                await applying
        finally:
            for pending in (scoring, applying):
                if pending is not None and not pending.done():
                    pending.cancel()

    def fail_stop(agent):
        """Bad messages never raise (they become dead letters), so an exception here is a bug or a lost
        dependency. Faust would ack the batch and restart the agent, losing it; instead stop the process
        at once, before any further offset commit, so a restarted worker processes the batch again."""

        async def guarded(*args: faust.StreamT) -> None:
            try:
                await agent(*args)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.critical("worker_stopping_on_unexpected_error", agent=agent.__name__, error=repr(error),
                             exc_info=True)
                os._exit(70)

        guarded.__name__ = agent.__name__
        return guarded

    @app.agent(raw_topic(names.catalog), name="catalog-updates")
    @fail_stop
    async def catalog_updates(stream: faust.StreamT) -> None:
        await scored_in_background(stream, "catalog-updates", processor.on_catalog)

    @app.agent(raw_topic(names.captures), name="tunnel-captures")
    @fail_stop
    async def tunnel_captures(stream: faust.StreamT) -> None:
        await scored_in_background(stream, "tunnel-captures", processor.on_captures)

    # test results are per-product evidence like shipments and reports: one agent, one dedup, one decision per flush
    @app.agent(raw_topic(names.shipments, names.damage_reports, names.test_results), name="damage-evidence")
    @fail_stop
    async def damage_evidence(stream: faust.StreamT) -> None:
        async for events, batch in batches(stream, "damage-evidence", settings.stats_batch_size):
            await publish(processor.on_damage_events(batch))
            state.hold(events)
            failpoints.reached("stats.applied")

    @app.timer(interval=max(0.5, min(5.0, settings.catalog_wait_s / 4)))
    @fail_stop
    async def captures_waiting_for_catalog(_app: faust.App) -> None:
        await publish(await score(processor.due_pending()))

    @app.task
    async def flush_state() -> None:
        """Flush every state_flush_interval_s, or at once when the layer asks (limits, a rebalance waiting)."""
        while True:
            try:
                await asyncio.wait_for(state.wake.wait(), settings.state_flush_interval_s)
            except asyncio.TimeoutError:
                pass
            started = time.perf_counter()
            try:
                records = await state.flush()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the state cannot be made durable: stop before any commit covers it
                log.critical("worker_stopping_on_failed_flush", error=repr(error), exc_info=True)
                os._exit(70)
            metrics.STATE_RECORDS.inc(records)
            metrics.STATE_FLUSH_SECONDS.observe(time.perf_counter() - started)

    inputs = {names.captures, names.catalog, names.shipments, names.damage_reports, names.test_results}

    @app.timer(interval=LAG_INTERVAL_S)
    async def export_consumer_lag(_app: faust.App) -> None:
        """packwise_consumer_lag of the input partitions this worker owns: end offsets from the broker (one
        request), committed offsets as the consumer last committed or read them at assignment."""
        try:
            owned = [tp for tp in app.consumer.assignment() if tp.topic in inputs]
            committed = {tp: app.consumer._committed_offset.get(tp) for tp in owned}  # faust pinned < 0.16
            ends = await app.consumer.highwaters(*owned) if owned else {}
            never = [tp for tp, offset in committed.items() if offset is None]
            earliest = await app.consumer.earliest_offsets(*never) if never else {}
        except ConsumerNotStarted:
            return
        except Exception as error:  # a metric: never a reason to stop the worker
            log.warning("consumer_lag_unavailable", error=repr(error))
            return
        since = {tp: earliest.get(tp, 0) if offset is None else offset for tp, offset in committed.items()}
        metrics.export_consumer_lag({(tp.topic, tp.partition): max(0, ends[tp] - since[tp])
                                     for tp in owned if tp in ends})

    @app.task
    async def load_model() -> None:
        """The worker consumes while its scoring process loads the model (the first scoring batch waits for it,
        in the scoring thread): a model that cannot load stops the worker, with the reason, as the CLI would."""
        metrics.export_model_version(scorer.version)  # from the bundle's checked manifest
        try:
            await asyncio.get_running_loop().run_in_executor(executor, scorer.wait_ready)
        except PackwiseError as error:
            log.critical("worker_stopping_model_not_loaded", error=str(error))
            os.write(2, f"packwise: {error}\n".encode())  # to the process's stderr: Faust redirects sys.stderr to its log
            os._exit(error.exit_code)
        log.info(MODEL_LOADED, model=scorer.version)  # what WorkerProcess (tests, benches, the demo) waits for

    @app.task
    async def learn_output_partitions() -> None:
        """Fetch the partition metadata of every topic the worker writes before the first capture does: the
        producer otherwise looks each topic up on its first send, holding up the first batches by most of
        a second."""
        try:
            producer = app.producer._ensure_producer()  # aiokafka's producer (faust pinned < 0.16)
            for spec in topic_specs(settings):
                if spec.role is not TopicRole.INPUT:
                    await producer.partitions_for(spec.name)
        except Exception as error:  # a warm-up: the first sends look the topics up anyway
            log.warning("output_metadata_warm_up_failed", error=repr(error))

    app.packwise_tables = tables  # for `packwise` diagnostics and tests
    app.packwise_state = state  # FlushingConsumer flushes it before waiting for events
    app.packwise_settings = settings  # RestoringStore reads the changelogs with them
    return app
