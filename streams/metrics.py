"""Prometheus metrics of the worker, served at GET /metrics on the worker's web port (with Faust's own per-message
metrics when PACKWISE_FAUST_METRICS is true). Counted per batch, not per message, where they can be."""

from prometheus_client import Counter, Histogram

DEAD_LETTERS = Counter("packwise_dead_letters_total", "Input messages sent to a dead-letter topic.",
                       ["topic", "error_type"])
DUPLICATES = Counter("packwise_duplicate_events_total",
                     "Shipments, damage reports and test results skipped because their event id was already applied.", ["topic"])
DECISIONS = Counter("packwise_decisions_total", "Pack-type decisions published.", ["package_type", "status"])
TEST_RESULTS = Counter("packwise_test_results_total", "Physical test results applied, by package type and outcome.",
                       ["package_type", "outcome"])
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
