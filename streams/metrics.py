"""Prometheus metrics of the worker, served at GET /metrics on the worker's web port (with Faust's own per-message
metrics when PACKWISE_FAUST_METRICS is true). Counted per batch, not per message, where they can be."""

from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram

DEAD_LETTERS = Counter("packwise_dead_letters_total", "Input messages sent to a dead-letter topic.",
                       ["topic", "error_type"])
DUPLICATES = Counter("packwise_duplicate_events_total",
                     "Shipments, damage reports and test results skipped because their event id was already applied.", ["topic"])
DECISIONS = Counter("packwise_decisions_total", "Pack-type decisions published.", ["package_type", "status"])
TEST_RESULTS = Counter("packwise_test_results_total", "Physical test results applied, by package type and outcome.",
                       ["package_type", "outcome"])
AUDITS = Counter("packwise_audits_total", "Audits started: products shipped one type lighter than the evidence "
                 "certifies, drawn at their marketplace's audit share.", ["marketplace", "package_type"])
RELABELS = Counter("packwise_relabel_triggers_total", "Relabel triggers published.", ["cause"])
SCORING_SECONDS = Histogram("packwise_scoring_batch_seconds", "Model inference time per scoring batch.",
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
EVENTS = Counter("packwise_events_total", "Input messages processed, by topic.", ["topic"])
BATCH_SECONDS = Histogram("packwise_batch_seconds", "Processing time of one batch, scoring and publishing included.",
                          ["agent"], buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
STATE_RECORDS = Counter("packwise_state_records_total",
                        "Changelog records written by state flushes (one per changed product and table per flush).")
STATE_FLUSH_SECONDS = Histogram("packwise_state_flush_seconds",
                                "Time of one state flush: outputs acknowledged, changelog acknowledged, store written.")
SCORING_FAILURES = Counter("packwise_scoring_failures_total",
                           "Products the model could not score whole: scored on text alone ('text_only'), or not at "
                           "all ('unscored': decided on damage statistics alone, sent to test).", ["outcome"])
CONSUMER_LAG = Gauge("packwise_consumer_lag",
                     "Messages of an input topic partition this worker owns that its consumer group has not "
                     "committed: the partition's end offset minus the committed offset (the earliest offset before a "
                     "first commit). Refreshed every few seconds; only the partitions the worker owns have a series.",
                     ["topic", "partition"])
MODEL_INFO = Gauge("packwise_model_info", "1 for the version of the model bundle this worker scores with.", ["version"])

_lag_exported: set[tuple[str, int]] = set()


def export_consumer_lag(lags: Mapping[tuple[str, int], int]) -> None:
    """Set the lag of each owned (topic, partition) and drop the series of partitions no longer owned, so the
    sum over workers counts every partition once."""
    for topic, partition in _lag_exported - lags.keys():
        CONSUMER_LAG.remove(topic, str(partition))
    for (topic, partition), lag in lags.items():
        CONSUMER_LAG.labels(topic=topic, partition=str(partition)).set(lag)
    _lag_exported.clear()
    _lag_exported.update(lags)


def export_model_version(version: str) -> None:
    """The bundle in use: one series, its version's."""
    MODEL_INFO.clear()
    MODEL_INFO.labels(version=version).set(1)
