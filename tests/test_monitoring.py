"""Monitoring as code (deploy/prometheus, deploy/grafana): promtool checks the rules and runs their unit
tests; every PromQL query of the rules and the dashboard names only metrics a real worker or the console
serves; a real Prometheus scrapes a real worker and a console and evaluates the rules and the dashboard's
queries on what it scraped.

Each check is a function returning the problems it finds, run on the real files (no problems) and on a
copy broken the way a person would break it (the problem is named)."""

from __future__ import annotations

import asyncio
import copy
import json
import queue
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlencode
from urllib.request import urlopen

import pytest
import yaml
from aiohttp.test_utils import TestClient
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from models.bundle_files import verify_files
from streams import metrics
from streams.broker import free_port
from streams.console.store import ConsoleStore
from streams.settings import Settings
from streams.simulator import SimulationConfig, run_simulation
from streams.processor import TopicNames
from streams.topics import client_config, create_topics, producer_config
from streams.workers import stop_process
from tests import test_console_web, test_k8s
from tests.test_console_web import store as console_store  # noqa: F401 (a fixture: a store with a certified cohort)
from tests.harness import WorkerProcess, isolated_settings, worker_settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"
RULE_TESTS = sorted((DEPLOY / "prometheus" / "tests").glob("*.yml"))
DASHBOARD = DEPLOY / "grafana" / "packwise-dashboard.json"
PROMETHEUS_NAMES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}  # series Prometheus makes itself
# what the issue asks the dashboard to show
DASHBOARD_METRICS = {"packwise_events_total", "packwise_decisions_total", "packwise_dead_letters_total",
                     "packwise_scoring_failures_total", "packwise_consumer_lag", "packwise_state_flush_seconds_bucket",
                     "packwise_batch_seconds_bucket", "packwise_model_info"}
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$instance": ".*"}


def tool(name: str, unchecked: str) -> str:
    """The path of promtool or prometheus; the test skips, naming what goes unchecked, where it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"NOT CHECKED: {unchecked}, because `{name}` is not installed (Debian's prometheus package: "
                    "apt-get install prometheus; .ci/run installs it)")
    return path


# -- PromQL ---------------------------------------------------------------------------------------------

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
            "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric (and recording rule) names a PromQL expression selects: its identifiers less functions,
    keywords, label names and matchers, strings, durations and numbers."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)  # label matchers, ranges and subqueries
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)  # label lists
    return {m.group() for m in re.finditer(r"(?<![\w.$])[A-Za-z_:][\w:]*", expr)
            if m.group().lower() not in KEYWORDS and not expr[m.end():].lstrip().startswith("(")}


def served_names(page: str) -> tuple[set[str], set[str]]:
    """(every series name a /metrics page declares, those it has samples of). A labelled metric nobody has
    counted yet is declared (HELP, TYPE) without samples: it is served all the same."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("", "_sum", "_count", "_created"), "info": ("_info",), "gaugehistogram": ("_bucket",
                "_gsum", "_gcount")}
    declared, sampled = set(), set()
    for family in text_string_to_metric_families(page):
        declared |= {family.name + s for s in suffixes.get(family.type, ("",))}
        sampled |= {s.name for s in family.samples}
    return declared | sampled, sampled


def load_rules(path: Path = RULES) -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def rule_expressions(rules: list[dict[str, Any]]) -> dict[str, str]:
    return {rule.get("alert") or rule["record"]: rule["expr"] for rule in rules}


def dashboard_expressions(dashboard: dict[str, Any]) -> dict[str, str]:
    """Every query of the dashboard, by panel and refId, and of its template variables."""
    queries = {f"{panel['title']}/{target['refId']}": target["expr"] for panel in dashboard["panels"]
               for target in panel.get("targets", [])}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            queries[f"variable {variable['name']}"] = re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", query)
    return queries


def unknown_metrics(expressions: dict[str, str], known: set[str]) -> list[str]:
    return [f"{where} queries {name}, which neither the worker nor the console serves and no rule records"
            for where, expr in expressions.items() for name in sorted(metric_names(expr) - known)]


def test_metric_names_are_read_from_promql() -> None:
    assert metric_names('sum by (topic, le) (rate(packwise_batch_seconds_bucket{agent="a", x=~"$instance"}'
                        '[$__rate_interval])) / on () group_left(version) packwise_model_info') == {
        "packwise_batch_seconds_bucket", "packwise_model_info"}
    assert metric_names('(sum(increase(a_total[30m] offset 5m)) or vector(0)) == 0 and on () b:c:d > 1e3') == {
        "a_total", "b:c:d"}
    assert metric_names('histogram_quantile(0.99, x) > bool 2 unless absent(up{job="by"})') == {"x", "up"}
    assert metric_names('label_replace(m, "dst", "$1", "src", "(.*)")') == {"m"}


# -- the rules ------------------------------------------------------------------------------------------


def test_rules_and_scrape_configurations_pass_promtool() -> None:
    promtool = tool("promtool", "deploy/prometheus's rules and scrape configurations")
    for command in (["check", "rules", str(RULES)],
                    ["check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
                    ["check", "config", str(DEPLOY / "prometheus" / "kubernetes.yml")]):
        done = subprocess.run([promtool, *command], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"promtool {' '.join(command)}:\n{done.stdout}{done.stderr}"


def test_promtool_refuses_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "rules.yml"
    broken.write_text(RULES.read_text().replace("> 0.01", "> > 0.01", 1))
    done = subprocess.run([tool("promtool", "that promtool refuses a broken rule"), "check", "rules", str(broken)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "PackwiseDeadLetters" in done.stdout + done.stderr


def test_alert_unit_tests_pass() -> None:
    assert RULE_TESTS, "no promtool unit tests in deploy/prometheus/tests"
    promtool = tool("promtool", "the alerts' unit tests in deploy/prometheus/tests")
    done = subprocess.run([promtool, "test", "rules", *map(str, RULE_TESTS)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def rule_problems(rules: list[dict[str, Any]]) -> list[str]:
    """Every alert says what broke, what it means and what to do; recording rules follow level:metric:operations."""
    problems = []
    for rule in rules:
        if "alert" in rule:
            missing = {"summary", "description", "runbook"} - set(rule.get("annotations", {}))
            problems += [f"alert {rule['alert']} has no {name} annotation" for name in sorted(missing)]
            if "severity" not in rule.get("labels", {}):
                problems.append(f"alert {rule['alert']} has no severity label")
        elif not re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", rule["record"]):
            problems.append(f"recording rule {rule['record']} is not named level:metric:operations")
    return problems


def coverage_problems(rules: list[dict[str, Any]], tests: list[dict[str, Any]]) -> list[str]:
    """Each alert has a unit test where it fires and one where it stays quiet."""
    cases: dict[str, set[bool]] = {}
    for group in (g for suite in tests for g in suite["tests"]):
        for case in group.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    problems = []
    for alert in (rule["alert"] for rule in rules if "alert" in rule):
        problems += [f"alert {alert} has no unit test where it {outcome}"
                     for fires, outcome in ((True, "fires"), (False, "stays quiet"))
                     if fires not in cases.get(alert, ())]
    return problems


def test_every_alert_is_documented_and_tested_both_ways() -> None:
    rules = load_rules()
    tests = [yaml.safe_load(path.read_text()) for path in RULE_TESTS]
    alerts = {rule["alert"] for rule in rules if "alert" in rule}
    assert {"PackwiseConsumerLagGrowing", "PackwiseDeadLetters", "PackwiseScoringFailures", "PackwiseDamageAboveTarget",
            "PackwiseDamageAboveTarget7d", "PackwiseCertificationsRefuted", "PackwiseNoDecisions", "PackwiseWorkerDown",
            "PackwiseConsoleDown", "PackwiseConsoleReaderFailed"} <= alerts
    assert rule_problems(rules) == []
    assert coverage_problems(rules, tests) == []

    untested = [*copy.deepcopy(rules), {"alert": "PackwiseNew", "expr": "vector(1)", "labels": {"severity": "info"},
                                        "annotations": {"summary": "s", "description": "d"}}]
    assert rule_problems(untested) == ["alert PackwiseNew has no runbook annotation"]
    assert coverage_problems(untested, tests) == ["alert PackwiseNew has no unit test where it fires",
                                                  "alert PackwiseNew has no unit test where it stays quiet"]
    quiet_only = copy.deepcopy(tests)
    for group in (g for suite in quiet_only for g in suite["tests"]):
        group["alert_rule_test"] = [c for c in group.get("alert_rule_test", [])
                                    if c["alertname"] != "PackwiseWorkerDown" or not c.get("exp_alerts")]
    assert coverage_problems(rules, quiet_only) == ["alert PackwiseWorkerDown has no unit test where it fires"]


# -- the dashboard --------------------------------------------------------------------------------------


def dashboard_problems(dashboard: dict[str, Any]) -> list[str]:
    """What Grafana needs to import the dashboard and draw every panel from the chosen Prometheus."""
    problems = [f"the dashboard has no {key}" for key in ("uid", "title", "schemaVersion", "panels", "templating")
                if key not in dashboard]
    variables = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
    ids = [panel.get("id") for panel in dashboard.get("panels", [])]
    problems += [f"panel id {i} is used twice" for i in sorted({i for i in ids if ids.count(i) > 1})]
    for panel in dashboard.get("panels", []):
        title = panel.get("title") or f"panel {panel.get('id')}"
        if set(panel.get("gridPos", {})) != {"h", "w", "x", "y"}:
            problems.append(f"{title} has no gridPos")
        if not panel.get("targets"):
            problems.append(f"{title} has no query")
        for target in panel.get("targets", []):
            if not target.get("expr") or not target.get("refId"):
                problems.append(f"{title} has a query without expr or refId")
            uid = target.get("datasource", panel.get("datasource", {})).get("uid", "")
            if uid.strip("${}") not in variables:
                problems.append(f"{title} queries data source {uid!r}, not the dashboard's data source variable")
            used = set(re.findall(r"\$(\w+)", target.get("expr", ""))) - {"__rate_interval", "__interval"}
            problems += [f"{title} uses ${name}, which the dashboard does not define"
                         for name in sorted(used - variables)]
    queried = {name for panel in dashboard.get("panels", []) for target in panel.get("targets", [])
               for name in metric_names(target.get("expr", ""))}
    problems += [f"no panel shows {name}" for name in sorted(DASHBOARD_METRICS - queried)]
    return problems


def test_dashboard_loads_and_shows_what_the_workers_measure() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard_problems(dashboard) == []

    broken = copy.deepcopy(dashboard)
    lag = next(p for p in broken["panels"] if "packwise_consumer_lag" in p["targets"][0]["expr"])
    lag["targets"][0]["expr"] = 'sum(packwise_consumer_lag{worker="$worker"})'
    broken["panels"][2]["id"] = broken["panels"][0]["id"]
    broken["panels"] = [p for p in broken["panels"] if "model_info" not in p["targets"][0]["expr"]]
    assert dashboard_problems(broken) == [
        f"panel id {dashboard['panels'][0]['id']} is used twice",
        "Consumer lag by partition uses $worker, which the dashboard does not define",
        "no panel shows packwise_model_info"]


# -- the k8s scrape configuration ------------------------------------------------------------------------


def scrape_target_problems(manifests: dict[str, list[dict]], scrape: dict[str, Any]) -> list[str]:
    """kubernetes.yml scrapes every StatefulSet pod by its DNS name on the web port, which the Service's
    scrape annotations and the NetworkPolicy name too."""
    statefulset = test_k8s.worker(manifests)
    namespace = manifests["kustomization.yaml"][0]["namespace"]
    port = int(test_k8s.settings_map(manifests)["PACKWISE_WEB_PORT"])
    name, service = statefulset["metadata"]["name"], statefulset["spec"]["serviceName"]
    expected = [f"{name}-{i}.{service}.{namespace}.svc.cluster.local:{port}"
                for i in range(statefulset["spec"]["replicas"])]
    job = next((j for j in scrape["scrape_configs"] if j["job_name"] == "packwise"), None)
    if job is None:
        return ["kubernetes.yml has no job packwise (the job the alerts select)"]
    listed = [target for static in job.get("static_configs", []) for target in static["targets"]]
    problems = [f"kubernetes.yml does not scrape {target}" for target in expected if target not in listed]
    problems += [f"kubernetes.yml scrapes {target}, which is no worker" for target in listed if target not in expected]
    annotated = [doc for doc in test_k8s.resources(manifests) if doc["kind"] == "Service"
                 and doc["metadata"].get("annotations", {}).get("prometheus.io/scrape") == "true"]
    for doc in annotated:
        announced = doc["metadata"]["annotations"].get("prometheus.io/port")
        if announced != str(port):
            problems.append(f"Service {doc['metadata']['name']} announces metrics on port {announced}, "
                            f"not the web port {port}")
    return problems


def test_kubernetes_scrape_configuration_finds_every_worker() -> None:
    manifests = test_k8s.load()
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "kubernetes.yml").read_text())
    assert scrape_target_problems(manifests, scrape) == []
    assert test_k8s.network_policy_problems(manifests) == []  # the monitoring namespace reaches the web port

    scaled = copy.deepcopy(manifests)
    test_k8s.worker(scaled)["spec"]["replicas"] = 4
    test_k8s.one(scaled, "Service", "packwise-web")["metadata"]["annotations"]["prometheus.io/port"] = "9090"
    assert scrape_target_problems(scaled, scrape) == [
        "kubernetes.yml does not scrape packwise-worker-3.packwise-worker.packwise.svc.cluster.local:6066",
        "Service packwise-web announces metrics on port 9090, not the web port 6066"]


# -- the worker's metrics, without a broker ---------------------------------------------------------------


def test_consumer_lag_keeps_only_the_partitions_owned() -> None:
    try:
        metrics.export_consumer_lag({("t.shipments", 0): 5, ("t.shipments", 1): 0})
        metrics.export_consumer_lag({("t.shipments", 1): 7, ("t.captures", 2): 3})  # partition 0 moved away
        page = served_page()
        assert 'packwise_consumer_lag{partition="1",topic="t.shipments"} 7.0' in page
        assert 'packwise_consumer_lag{partition="2",topic="t.captures"} 3.0' in page
        assert 'partition="0",topic="t.shipments"' not in page
    finally:
        metrics.export_consumer_lag({})
    assert "packwise_consumer_lag{" not in served_page()


def served_page() -> str:
    import prometheus_client

    return prometheus_client.generate_latest().decode()


# -- the console's metrics, without a broker --------------------------------------------------------------


def console_page(store: ConsoleStore) -> str:
    """The console's /metrics on `store`, read from its web app in-process (tests/test_console_web.py)."""
    async def read(client: TestClient) -> str:
        response = await client.get("/metrics")
        assert response.status == 200, response.status
        return await response.text()

    return test_console_web.with_client(store, None, read)


def console_rules() -> list[dict[str, Any]]:
    """The rules over the console's metrics: rules.yml's group packwise.console."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return next(group["rules"] for group in groups if group["name"] == "packwise.console")


def test_every_console_rule_names_a_metric_the_console_serves(console_store: ConsoleStore) -> None:
    page = console_page(console_store)
    served, sampled = served_names(page)
    assert {"packwise_certified_shipments", "packwise_certified_damages", "packwise_target_damage_rate",
            "packwise_console_caught_up"} <= sampled
    rules = console_rules()
    known = served | PROMETHEUS_NAMES | {rule["record"] for rule in load_rules() if "record" in rule}
    assert unknown_metrics(rule_expressions(rules), known) == []

    typo = copy.deepcopy(rules)
    typo[0]["expr"] = typo[0]["expr"].replace("packwise_console_caught_up", "packwise_console_caughtup")
    assert unknown_metrics(rule_expressions(typo), known) == [
        f"{typo[0]['record']} queries packwise_console_caughtup, which neither the worker nor the console serves and "
        "no rule records"]
    if shutil.which("promtool"):  # without it the promtool tests skip, and say so
        lint = subprocess.run(["promtool", "check", "metrics"], input=page, capture_output=True, text=True, timeout=30)
        assert lint.returncode == 0, lint.stdout + lint.stderr


@contextmanager
def serving_console(store: ConsoleStore) -> Iterator[str]:
    """The console's web app on `store`, served on 127.0.0.1 from a thread of its own through
    tests/test_console_web.py's client until the block ends; yields its host:port."""
    address: queue.Queue[str] = queue.Queue()
    stop = threading.Event()

    async def serve(client: TestClient) -> None:
        address.put(f"127.0.0.1:{client.port}")
        await asyncio.to_thread(stop.wait)

    thread = threading.Thread(target=test_console_web.with_client, args=(store, None, serve), daemon=True)
    thread.start()
    try:
        yield address.get(timeout=30)
    finally:
        stop.set()
        thread.join(30)


# -- a real worker, a real Prometheus ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def running_worker(kafka_bootstrap: str, trained_bundle: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """A worker that has processed a small fulfillment center's events and one poison message."""
    tmp = tmp_path_factory.mktemp("monitored")
    base = isolated_settings(kafka_bootstrap)
    create_topics(base)
    worker = WorkerProcess(worker_settings(base, tmp, "worker-0", trained_bundle), tmp / "worker-0.log")
    try:
        worker.start()
        run_simulation(base, SimulationConfig(products=20, rounds=2, units_per_round=2, round_interval_s=0.2, seed=5))
        producer = Producer(producer_config(base))
        producer.produce(base.topic_prefix + "shipments", key=b"B0POISON", value=b"not avro")  # a dead letter
        assert producer.flush(30) == 0
        yield worker
    finally:
        worker.stop()
        assert worker.gone()


def metrics_url(settings: Settings) -> str:
    return f"http://{settings.web_host}:{settings.web_port}/metrics"


def get(url: str, timeout_s: float = 10.0) -> str:
    with urlopen(url, timeout=timeout_s) as response:
        return response.read().decode()


def wait_for(probe, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up after {timeout_s:.0f}s waiting for {what}"
        time.sleep(0.5)


@pytest.mark.kafka
@pytest.mark.slow
def test_every_query_names_a_metric_the_worker_or_the_console_serves(running_worker: WorkerProcess,
                                                                    console_store: ConsoleStore) -> None:
    settings = running_worker.settings

    def counted() -> str | None:
        page = get(metrics_url(settings))
        seen = f'topic="{settings.topic_prefix}shipments"' in page and "packwise_consumer_lag{" in page
        return page if seen else None

    page = wait_for(counted, 30, "the worker's events and consumer lag")
    served, _ = served_names(page)
    console, _ = served_names(console_page(console_store))
    rules = load_rules()
    known = served | console | PROMETHEUS_NAMES | {rule["record"] for rule in rules if "record" in rule}
    dashboard = json.loads(DASHBOARD.read_text())
    assert unknown_metrics(rule_expressions(rules), known) == []
    assert unknown_metrics(dashboard_expressions(dashboard), known) == []

    dashboard["panels"][2]["targets"][0]["expr"] = "sum(rate(packwise_events_totals[5m]))"  # a typo
    assert unknown_metrics(dashboard_expressions(dashboard), known) == [
        f"{dashboard['panels'][2]['title']}/A queries packwise_events_totals, which neither the worker nor the console "
        "serves and no rule records"]
    if shutil.which("promtool"):  # without it the promtool tests skip, and say so
        lint = subprocess.run(["promtool", "check", "metrics"], input=page, capture_output=True, text=True, timeout=30)
        assert lint.returncode == 0, lint.stdout + lint.stderr


@contextmanager
def prometheus(config: dict[str, Any], tmp: Path) -> Iterator[str]:
    """A real Prometheus on 127.0.0.1 with `config`, its data in `tmp`; yields its URL; stopped by pid."""
    binary = tool("prometheus", "that a real Prometheus scrapes a worker and evaluates the rules and the dashboard")
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{free_port()}"
    with open(tmp / "prometheus.log", "w") as log:
        process = subprocess.Popen([binary, f"--config.file={tmp / 'prometheus.yml'}",
                                    f"--storage.tsdb.path={tmp / 'data'}",
                                    f"--web.listen-address={url.removeprefix('http://')}"],
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        def ready() -> bool:
            assert process.poll() is None, f"prometheus exited:\n{(tmp / 'prometheus.log').read_text()[-3000:]}"
            try:
                return get(url + "/-/ready", 2).strip() != ""
            except (URLError, OSError):
                return False

        wait_for(ready, 30, "Prometheus to be ready")
        yield url
    finally:
        stop_process(process, 30)
        assert process.poll() is not None


def group_lag(settings: Settings) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
    """(lag, end offset) of every input partition for the worker's consumer group, as Kafka reports them."""
    consumer = Consumer(client_config(settings, **{"group.id": settings.app_id, "enable.auto.commit": False}))
    try:
        names = TopicNames.for_settings(settings)
        inputs = (names.captures, names.catalog, names.shipments, names.damage_reports, names.test_results)
        committed = consumer.committed([TopicPartition(t, p) for t in inputs for p in range(settings.partitions)], 10)
        lag, ends = {}, {}
        for tp in committed:
            low, ends[(tp.topic, tp.partition)] = consumer.get_watermark_offsets(tp, timeout=10)
            lag[(tp.topic, tp.partition)] = ends[(tp.topic, tp.partition)] - (tp.offset if tp.offset >= 0 else low)
        return lag, ends
    finally:
        consumer.close()


def query(url: str, expr: str) -> list[dict[str, Any]]:
    answer = json.loads(get(f"{url}/api/v1/query?{urlencode({'query': expr})}"))
    assert answer["status"] == "success", f"{expr}: {answer}"
    return answer["data"]["result"]


def scraping(config: dict[str, Any], job: str, target: str) -> dict[str, Any]:
    """`config`, its scrape job `job` pointed at `target` alone."""
    next(j for j in config["scrape_configs"] if j["job_name"] == job)["static_configs"] = [{"targets": [target]}]
    return config


@pytest.mark.kafka
@pytest.mark.slow
def test_real_prometheus_scrapes_the_worker_and_evaluates_rules_and_dashboard(running_worker: WorkerProcess,
                                                                              trained_bundle: Path,
                                                                              console_store: ConsoleStore,
                                                                              tmp_path: Path) -> None:
    settings = running_worker.settings
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(RULES)]
    scraping(config, "packwise", f"{settings.web_host}:{settings.web_port}")
    with serving_console(console_store) as console, \
            prometheus(scraping(config, "packwise-console", console), tmp_path) as url:
        up = wait_for(lambda: query(url, 'up{job="packwise"} == 1'), 30, "the worker's scrape")
        assert up[0]["metric"]["instance"] == f"{settings.web_host}:{settings.web_port}"
        wait_for(lambda: query(url, 'up{job="packwise-console"} == 1'), 30, "the console's scrape")
        # the console's store: JP's certified poly_bag, 1 damaged in 10 shipments (too few for an alert)
        cohort = wait_for(lambda: query(url, "marketplace_package_type:packwise_certified_damage_rate:ratio"), 15,
                          "the certified cohort's recording rules")
        assert [(s["metric"]["marketplace"], s["metric"]["package_type"], float(s["value"][1])) for s in cohort] == [
            ("JP", "poly_bag", 0.1)]
        # the worker is idle once it has committed what it read: its lag is the group's, as Kafka tells it
        _, ends = group_lag(settings)
        assert sum(ends.values()) > 0  # so a lag of 0 is the worker's commits, not empty topics

        def as_kafka_says() -> dict[tuple[str, int], int] | None:
            scraped = {(s["metric"]["topic"], int(s["metric"]["partition"])): int(float(s["value"][1]))
                       for s in query(url, "packwise_consumer_lag")}
            return scraped if scraped == group_lag(settings)[0] else None

        lag = wait_for(as_kafka_says, 45, "Prometheus to hold the lag Kafka reports for the worker's group")
        assert len(lag) == 5 * settings.partitions  # every partition of the five inputs, each once
        model = query(url, "packwise_model_info")
        version = verify_files(trained_bundle)["version"]
        assert [(s["metric"]["version"], s["value"][1]) for s in model] == [(version, "1")]
        wait_for(lambda: query(url, "packwise:consumer_lag:sum"), 15, "the recording rules")

        def evaluated_rules() -> dict[str, dict]:
            rules = json.loads(get(url + "/api/v1/rules"))["data"]["groups"]
            return {r["name"]: r for group in rules for r in group["rules"]}

        def active(rules: dict[str, dict]) -> list[str]:
            return [f"{r['name']} ({r['state']} since {(r.get('alerts') or [{}])[0].get('activeAt')})"
                    for r in rules.values() if r["type"] == "alerting" and r["state"] != "inactive"]

        evaluated = evaluated_rules()
        assert set(evaluated) == set(rule_expressions(load_rules()))
        assert [f"{name}: {r.get('lastError')}" for name, r in evaluated.items() if r["health"] != "ok"] == []
        # A healthy worker raises no alert. An evaluation that ran before Prometheus's first scrape of the worker
        # sees no `up` series at all and leaves PackwiseWorkersAbsent pending until the alerts group's next
        # evaluation, which a loaded machine may delay: give the alerts a few evaluations to settle.
        deadline = time.monotonic() + 20
        while active(evaluated) and time.monotonic() < deadline:
            time.sleep(0.5)
            evaluated = evaluated_rules()
        assert active(evaluated) == []

        page = get(metrics_url(settings))
        _, sampled = served_names(page)
        time.sleep(2.5)  # two scrapes, so that rates over what was sampled have two points
        empty = []
        for where, expr in dashboard_expressions(json.loads(DASHBOARD.read_text())).items():
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            if not query(url, expr) and metric_names(expr) <= sampled | PROMETHEUS_NAMES:
                empty.append(f"{where}: {expr}")
        assert empty == [], "queries over metrics the worker has samples of returned nothing"
