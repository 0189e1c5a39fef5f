"""The `packwise` command line: one entry point for the broker, topics, model and (later) workers.

Operator mistakes end in one clear line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
from pathlib import Path
from typing import Callable, Sequence

from streams.errors import PackwiseError
from streams.settings import Settings, reference_table


def local_broker(settings: Settings, secure: bool = False):
    from streams.broker import LocalBroker

    return LocalBroker(Path(settings.state_dir) / "kafka", settings.kafka_port,
                       settings.kafka_controller_port, settings.kafka_heap, secure)


def cmd_kafka(args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    broker = local_broker(settings, secure=args.secure)
    if args.action == "start":
        status, started = broker.start()
        print(("started: " if started else "already running: ") + status.describe())
        if args.secure:
            _grant_local_roles(broker, settings)
    elif args.secure:
        raise PackwiseError("--secure goes with `packwise kafka start` only")
    elif args.action == "stop":
        print("stopped the Kafka broker" if broker.stop() else f"Kafka is not running at {broker.bootstrap}; nothing to stop")
    else:
        status = broker.status()
        print(status.describe())
        return 0 if status.running else 3
    return 0


def _grant_local_roles(broker, settings: Settings) -> None:
    """The secured broker's roles get their ACLs for the topics of these settings (prefix, app id); repeating
    `kafka start --secure` with other settings grants those too. Then how clients connect, as each role."""
    from streams.secure_broker import ROLES, grant_roles

    secrets = broker.secrets
    admin = secrets.client_settings(settings.replace(bootstrap_servers=broker.bootstrap), "admin")
    count = grant_roles(admin, settings)
    print(f"SASL_SSL with SCRAM-SHA-512; {count} ACLs for the roles {', '.join(ROLES)} on topics "
          f"'{settings.topic_prefix}*' and app id '{settings.app_id}'. Connect as a role with:")
    print(f"  PACKWISE_KAFKA_SECURITY_PROTOCOL=SASL_SSL PACKWISE_KAFKA_CA_FILE={secrets.ca_file} "
          f"PACKWISE_KAFKA_USERNAME=ROLE PACKWISE_KAFKA_PASSWORD_FILE={secrets.password_file('ROLE')}")


def cmd_topics(args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    from streams import topics

    if args.action == "create":
        report = topics.create_topics(settings)
        print(f"created {len(report.created)} topics, {len(report.existing)} already existed "
              f"on {settings.bootstrap_servers}")
        for name in report.created:
            print(f"  + {name}")
        if settings.schema_registry_url:
            _register_schemas(settings)
        return 0
    specs = topics.topic_specs(settings)
    present = topics.existing_partitions(topics.admin_client(settings), settings)
    width = max(len(spec.name) for spec in specs)
    for spec in specs:
        state = f"{present[spec.name]} partitions" if spec.name in present else "MISSING"
        print(f"{spec.name:<{width}}  {spec.role.value:<11}  {spec.cleanup_policy:<7}  {state}")
    return 0 if all(spec.name in present for spec in specs) else 3


def _register_schemas(settings: Settings, schemas_dir: Path | None = None) -> None:
    from streams import serde, topics

    done = serde.register_contracts(settings.schema_registry_url, topics.contract_subjects(settings),
                                    schemas_dir or serde.DEFAULT_SCHEMAS_DIR, settings)
    print(f"registered {len(done)} subjects ({serde.SUBJECT_NAMING}, compatibility {serde.COMPATIBILITY}) "
          f"at {settings.schema_registry_url}")
    for registration in done:
        print(f"  {registration.subject}: {registration.contract}, {registration.versions} version(s), "
              f"current id {registration.schema_id}")


def cmd_schemas(args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    if not settings.schema_registry_url:
        raise PackwiseError("no Schema Registry configured (PACKWISE_SCHEMA_REGISTRY_URL): the embedded default "
                            "derives ids from the shipped schemas and needs no registration")
    _register_schemas(settings, args.schemas)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    if args.markdown:  # the README's configuration reference
        print("| variable | default | meaning |\n|---|---|---|")
        for name, default, doc in reference_table():
            default = default.replace(str(Path.home()), "~")
            print(f"| `{name}` | `{default}` | {doc} |" if default else f"| `{name}` | | {doc} |")
        return 0
    rows = reference_table(settings)
    width = max(len(name) for name, _, _ in rows)
    for name, value, doc in rows:
        print(f"{name:<{width}}  {value or '(empty)'}\n{'':<{width}}  {doc}")
    return 0


def check_web_port(settings: Settings) -> None:
    """Faust binds its web server once the worker runs, and a taken port then ends in a traceback: try the
    bind first. SO_REUSEADDR, as aiohttp binds: a port a stopped worker left in TIME_WAIT is free."""
    import errno
    import socket

    address = f"{settings.web_host}:{settings.web_port}"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.web_host, settings.web_port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise PackwiseError(f"the web port {address} is already in use (another worker on this machine?): "
                                    "stop it, or give this worker its own PACKWISE_WEB_PORT") from None
            raise PackwiseError(f"the worker's web server cannot listen on {address} ({error.strerror}): set "
                                "PACKWISE_WEB_HOST to an address of this machine") from None


def cmd_worker(args: argparse.Namespace) -> int:
    from streams import topics
    from streams.scoring import ScoringProcess

    settings: Settings = args.settings
    if args.model:
        settings = settings.replace(model_path=str(args.model))
    # The model loads in its process (torch's import is most of it) while this one checks the topics and
    # builds the app; a model that cannot load is reported first, as the more basic mistake.
    scorer = ScoringProcess(settings.model_path, threads=settings.scoring_threads, wait=False)
    try:
        try:
            check_web_port(settings)
            topics.verify_topics(settings, attempts=3, timeout_s=5.0)
            from streams.processor import Limits

            limits = Limits(topics.max_record_bytes(settings))
        except PackwiseError:
            scorer.wait_ready()
            raise
        import faust

        from streams.app import create_app

        settings.worker_dir.mkdir(parents=True, exist_ok=True)
        try:
            app = create_app(settings, scorer, limits)  # refuses contracts not registered in a registry
        except PackwiseError:
            scorer.wait_ready()
            raise
        # Faust starts while the model loads: its start-up and recovery take as long (bench/first_event.py); the
        # first scoring batch waits for the model, and a model that cannot load stops the worker (streams/app.py)
        if settings.wait_for_model:
            scorer.wait_ready()
        # Faust and its dependencies are hundreds of thousands of long-lived objects: keep them out of the
        # cyclic garbage collector's full passes.
        gc.collect()
        gc.freeze()
        from streams.logs import get_logger, logging_config

        get_logger("packwise.worker").info(
            "worker_starting", worker=settings.worker_name, model=scorer.version, scoring_process=scorer.pid,
            kafka=settings.bootstrap_servers, web=f"http://{settings.web_host}:{settings.web_port}")
        # Faust would install its own log handlers: it gets ours, so its lines render as packwise's do.
        worker = faust.Worker(app, loglevel=settings.log_level, quiet=True,
                              logging_config=logging_config(settings, library_level=settings.log_level))
        worker.spinner = None  # at WARNING it draws cursor escapes between the log lines, into files too
        worker.execute_from_commandline()
    finally:
        scorer.close()
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from streams.simulator import SimulationConfig, run_simulation

    config = SimulationConfig(products=args.products, seed=args.seed, rounds=args.rounds,
                              units_per_round=args.units, round_interval_s=args.round_interval,
                              captures_per_s=args.captures_per_s, duplicate_rate=args.duplicate_rate,
                              sabotaged=args.sabotaged, lab_tests_per_round=args.lab_tests)
    with Progress(TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=False) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        result = run_simulation(args.settings, config, progress)
    shipped = sum(sum(v) for v in result.truth.shipments.values())
    reported = sum(sum(v) for v in result.truth.damages.values())
    passed = sum(ok for _, _, ok in result.test_results)
    lab = (f", {len(result.test_results)} physical tests ({passed} passed)" if args.lab_tests else "")
    print(f"simulated {len(result.products)} products: {shipped} shipments, {reported} damage reports{lab}, "
          f"{result.events_sent} events sent; {len(result.decisions)} products have a decision")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from streams.demo import run_demo

    return run_demo(args.settings, args.products, args.rounds, args.train_products, args.epochs, args.keep_broker)


def cmd_clean(args: argparse.Namespace) -> int:
    from streams.demo import clean_demos

    return clean_demos(args.settings, delete=args.yes)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that ends each option with its default, where it has one worth showing (not None, not a flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if ("%(default)" in (action.help or "") or not action.option_strings
                or action.default is None or action.default is False or action.default == argparse.SUPPRESS):
            return action.help
        return f"{action.help} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="packwise",
        description="Streaming decisions on the lightest package each product can ship in undamaged.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    kafka = sub.add_parser("kafka", help="start, stop or check the local Apache Kafka broker (127.0.0.1)",
                           description="The local single-node broker; its data, log and pid live in "
                                       "PACKWISE_STATE_DIR/kafka.")
    kafka.add_argument("action", choices=["start", "stop", "status"],
                       help="start: resolve the jars if missing, format the storage once, start the broker and wait "
                            "until it serves (nothing happens if it runs); stop: SIGTERM by pid, SIGKILL after 30 s; "
                            "status: say whether it runs (exit 0) or not (exit 3)")
    kafka.add_argument("--secure", action="store_true",
                       help="with start: a SASL_SSL listener (a CA and broker certificate, SCRAM-SHA-512 users per "
                            "role, passwords in PACKWISE_STATE_DIR/kafka/security) and ACLs per role; the storage "
                            "remembers it: a broker formatted with --secure starts only with it, and one formatted "
                            "without only without")
    kafka.set_defaults(handler=cmd_kafka)

    topics = sub.add_parser("topics", help="create the topics idempotently, or list them with partition counts",
                            description="The topics of PACKWISE_TOPIC_PREFIX and PACKWISE_APP_ID on "
                                        "PACKWISE_BOOTSTRAP_SERVERS.")
    topics.add_argument("action", choices=["create", "list"],
                        help="create: create every missing topic (inputs, outputs, dead letters, table changelogs) "
                             "with PACKWISE_PARTITIONS partitions and its cleanup policy, leave existing ones as they "
                             "are, and register the contracts when a Schema Registry is set; list: every topic with "
                             "its role, cleanup policy and partitions, MISSING where absent (exit 3 if any is)")
    topics.set_defaults(handler=cmd_topics)

    schemas = sub.add_parser(
        "schemas", help="register the event contracts in the Schema Registry (a deploy step)",
        description="register: every version of every contract (schemas/ and schemas/history/, oldest first) "
        "under the subject of each topic that carries it (TopicNameStrategy: <topic>-value), after setting the "
        "subject's compatibility to FULL_TRANSITIVE. Safe to repeat; a refusal is reported in one line. "
        "Workers and tools never register: they only look ids up.")
    schemas.add_argument("action", choices=["register"])
    schemas.add_argument("--schemas", type=Path, default=None,
                         help="folder of the contracts to register (default: the schemas shipped with packwise)")
    schemas.set_defaults(handler=cmd_schemas)

    worker = sub.add_parser("worker", help="run a stream worker: score products, keep damage statistics, decide")
    worker.add_argument("--model", type=Path, help="model bundle directory (default: PACKWISE_MODEL_PATH)")
    worker.set_defaults(handler=cmd_worker)

    simulate = sub.add_parser("simulate", help="run a simulated fulfillment center against the topics")
    simulate.add_argument("--products", type=int, default=300, help="products in the simulated center")
    simulate.add_argument("--seed", type=int, default=7, help="seed of the world (not the training seed)")
    simulate.add_argument("--rounds", type=int, default=10, help="shipping rounds")
    simulate.add_argument("--units", type=int, default=3, help="units of each product shipped per round")
    simulate.add_argument("--round-interval", type=float, default=1.0, help="seconds between rounds")
    simulate.add_argument("--captures-per-s", type=float, default=200.0, help="conveyor pace")
    simulate.add_argument("--duplicate-rate", type=float, default=0.01,
                          help="share of shipments and reports sent twice (same event id)")
    simulate.add_argument("--sabotaged", type=int, default=0,
                          help="products that break in light packaging although they do not look it")
    simulate.add_argument("--lab-tests", type=int, default=0, metavar="N",
                          help="a simulated test lab answers the N most valuable open test requests each round "
                               "(results on test-results); 0: no lab")
    simulate.set_defaults(handler=cmd_simulate)

    demo = sub.add_parser("demo", help="everything on this machine: broker, model, worker, simulated center, live view")
    demo.add_argument("--products", type=int, default=300, help="products in the simulated center")
    demo.add_argument("--rounds", type=int, default=12, help="shipping rounds (about a second each)")
    demo.add_argument("--train-products", type=int, default=16000,
                      help="products in the warm-up history the demo model trains on (enough for a calibration "
                           "split that can certify on reported damage)")
    demo.add_argument("--epochs", type=int, default=2, help="training epochs of the demo model")
    demo.add_argument("--keep-broker", action="store_true", help="leave the broker running if the demo started it")
    demo.set_defaults(handler=cmd_demo)

    clean = sub.add_parser(
        "clean", help="list, then delete with --yes, the topics and worker state earlier demos left",
        description="Every demo creates its own topics (demo-<time>.*, packwise-demo-<time>-*-changelog) and a "
                    "worker state folder and log under PACKWISE_STATE_DIR. Without --yes this lists them and their "
                    "size; with --yes it deletes them. The trained demo models are kept (the next demo reuses "
                    "them); the broker and other topics are left alone. Do not run it while a demo runs.")
    clean.add_argument("--yes", action="store_true", help="delete what is listed (default: only list it)")
    clean.set_defaults(handler=cmd_clean)

    config = sub.add_parser("config", help="print every setting (PACKWISE_* variables) with its value in force")
    config.add_argument("--markdown", action="store_true", help="the defaults as a markdown table (for the README)")
    config.set_defaults(handler=cmd_config)

    from streams import watch

    watch.add_parser(sub)

    from models import dataset

    dataset.add_parser(sub)

    from streams.console import cli as console_cli

    console_cli.add_parsers(sub)

    from models import cli as model_cli

    model_cli.register(sub)
    for command in sub.choices.values():
        command.formatter_class = DefaultsHelpFormatter
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # here, not in Python's own flush at exit, where a broken pipe is a printed trace
    except BrokenPipeError:
        # The reader went away (`packwise topics create | head -1`): stop quietly, as Unix tools do. Python
        # flushes stdout once more at exit, so it is pointed at devnull first (as the Python docs advise).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        args.settings = Settings.from_env()
        from streams.logs import configure_logging

        configure_logging(args.settings)
        return handler(args)
    except PackwiseError as error:
        print(f"packwise: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("packwise: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
