"""One logging configuration for every packwise process: structlog JSON lines on stdout, or a readable
console rendering when attached to a terminal."""

from __future__ import annotations

import logging
import sys

import structlog

from streams.settings import Settings


def configure_logging(settings: Settings | None = None) -> None:
    settings = settings or Settings.from_env()
    level = logging.getLevelName(settings.log_level.upper())
    if not isinstance(level, int):
        level = logging.INFO
    as_json = settings.log_format == "json" or (settings.log_format == "auto" and not sys.stdout.isatty())
    renderer = structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
    # Libraries (aiokafka, faust) log through the standard library: same level, same stream.
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stdout, format="%(levelname)s %(name)s %(message)s")


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
