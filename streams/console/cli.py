"""`packwise console` and `packwise dlq replay` on the main command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from streams.settings import Settings


def store_path(settings: Settings) -> Path:
    return Path(settings.state_dir) / "console" / f"{settings.app_id}.sqlite3"


def cmd_console(args: argparse.Namespace) -> int:
    from streams.console.web import serve

    settings: Settings = args.settings
    changes = {k: v for k, v in (("console_host", args.host), ("console_port", args.port)) if v is not None}
    serve(settings.replace(**changes), on_ready=lambda line: print(line, flush=True))
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    from streams.console.replay import Coordinates, replay
    from streams.console.store import ConsoleStore

    settings: Settings = args.settings
    targets = [Coordinates.parse(text) for text in args.dead_letters]
    store = ConsoleStore(store_path(settings))
    try:
        report = replay(settings, store, targets, force=args.force)
    finally:
        store.close()
    print(report.line())
    return 0 if not report.refused else 3


def add_parsers(sub: argparse._SubParsersAction) -> None:
    console = sub.add_parser(
        "console", help="web console for ops: decisions, the certified promise, test queue, dead letters (127.0.0.1)",
        description="Reads the output topics, the evidence topics and the dead-letter topics with its own consumer "
                    "group (<app id>-console) into SQLite under PACKWISE_STATE_DIR/console, and serves pages that "
                    "update live. Binds PACKWISE_CONSOLE_HOST (127.0.0.1); any other address requires "
                    "PACKWISE_CONSOLE_TOKEN_FILE. Ctrl-C stops it; it resumes where it stopped.")
    console.add_argument("--host", help="address to bind (default: PACKWISE_CONSOLE_HOST, 127.0.0.1)")
    console.add_argument("--port", type=int, help="port (default: PACKWISE_CONSOLE_PORT, 8087)")
    console.set_defaults(handler=cmd_console)

    dlq = sub.add_parser("dlq", help="replay dead letters to their input topic after a fix, once each",
                         description="replay: send the original key and value of each dead letter back to the input "
                                     "topic it failed on, with a packwise-replay-of header. Each dead letter is "
                                     "replayed once (recorded in the console's store, shared with the console's "
                                     "replay button); exit 3 when any was refused.")
    dlq.add_argument("action", choices=["replay"])
    dlq.add_argument("dead_letters", nargs="+", metavar="DLQ_TOPIC/PARTITION/OFFSET",
                     help="coordinates of a dead letter, e.g. shipments.dlq/0/42 (shown on the console's dead-letter "
                          "page)")
    dlq.add_argument("--force", action="store_true",
                     help="replay one whose earlier replay was never confirmed (the console crashed mid-send)")
    dlq.set_defaults(handler=cmd_dlq)
