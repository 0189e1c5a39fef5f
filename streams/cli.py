"""The `packwise` command line: one entry point for the broker, topics, model and (later) workers.

Operator mistakes end in one clear line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from streams.errors import PackwiseError
from streams.settings import Settings, reference_table


def local_broker(settings: Settings):
    from streams.broker import LocalBroker

    return LocalBroker(Path(settings.state_dir) / "kafka", settings.kafka_port,
                       settings.kafka_controller_port, settings.kafka_heap)


def cmd_kafka(args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    broker = local_broker(settings)
    if args.action == "start":
        status, started = broker.start()
        print(("started: " if started else "already running: ") + status.describe())
    elif args.action == "stop":
        print("stopped the Kafka broker" if broker.stop() else f"Kafka is not running at {broker.bootstrap}; nothing to stop")
    else:
        status = broker.status()
        print(status.describe())
        return 0 if status.running else 3
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    from streams import topics

    if args.action == "create":
        report = topics.create_topics(settings)
        print(f"created {len(report.created)} topics, {len(report.existing)} already existed "
              f"on {settings.bootstrap_servers}")
        for name in report.created:
            print(f"  + {name}")
        return 0
    specs = topics.topic_specs(settings)
    present = topics.existing_partitions(topics.admin_client(settings), settings)
    width = max(len(spec.name) for spec in specs)
    for spec in specs:
        state = f"{present[spec.name]} partitions" if spec.name in present else "MISSING"
        print(f"{spec.name:<{width}}  {spec.role.value:<11}  {spec.cleanup_policy:<7}  {state}")
    return 0 if all(spec.name in present for spec in specs) else 3


def cmd_config(args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    rows = reference_table(settings)
    width = max(len(name) for name, _, _ in rows)
    for name, value, doc in rows:
        print(f"{name:<{width}}  {value or '(empty)'}\n{'':<{width}}  {doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="packwise",
        description="Streaming decisions on the lightest package each product can ship in undamaged.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    kafka = sub.add_parser("kafka", help="start, stop or check the local Apache Kafka broker (127.0.0.1)")
    kafka.add_argument("action", choices=["start", "stop", "status"])
    kafka.set_defaults(handler=cmd_kafka)

    topics = sub.add_parser("topics", help="create the topics idempotently, or list them with partition counts")
    topics.add_argument("action", choices=["create", "list"])
    topics.set_defaults(handler=cmd_topics)

    config = sub.add_parser("config", help="print every setting (PACKWISE_* variables) with its value in force")
    config.set_defaults(handler=cmd_config)

    from models import cli as model_cli

    model_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
