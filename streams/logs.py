"""One logging configuration for every packwise process: JSON lines on stdout, or a readable console rendering
when attached to a terminal.

packwise logs through structlog; Faust, mode and aiokafka log through the standard library. Both end in
one handler on stdout whose structlog ProcessorFormatter renders every line the same way, so a JSON log
holds nothing but JSON objects, each with its own level and the name of the logger that wrote it. The
worker hands the same configuration to Faust (`logging_config`), which would otherwise install its own.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any

import structlog

from streams.settings import Settings

# Run on every line, whichever library wrote it, before it is rendered.
_ENRICH = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def renders_json(settings: Settings) -> bool:
    return settings.log_format == "json" or (settings.log_format == "auto" and not sys.stdout.isatty())


def logging_config(settings: Settings, library_level: str | None = None) -> dict[str, Any]:
    """The standard library's configuration (logging.config.dictConfig): one stdout handler rendering as
    structlog does. Libraries log at `library_level`, by default at least WARNING: their INFO lines are
    the worker's business (Faust's "[^Worker]: Ready" among them), not a command line tool's."""
    level = logging.getLevelName(settings.log_level)
    if renders_json(settings):
        render = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        render = [structlog.dev.ConsoleRenderer()]  # formats exceptions itself
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"packwise": {
            "()": structlog.stdlib.ProcessorFormatter,
            "foreign_pre_chain": _ENRICH,
            "processors": [structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
        }},
        "handlers": {"stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout",
                                "formatter": "packwise"}},
        "root": {"level": library_level or max(level, logging.WARNING), "handlers": ["stdout"]},
        "loggers": {"packwise": {"level": level},
                    # its DEBUG line quotes every value sent, and a dead letter holds a customer's comment
                    "aiokafka.producer.producer": {"level": max(level, logging.INFO)}},
    }


def configure_logging(settings: Settings | None = None) -> None:
    settings = settings or Settings.from_env()
    structlog.configure(
        processors=[*_ENRICH, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(settings.log_level)),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    logging.config.dictConfig(logging_config(settings))
    logging.captureWarnings(True)  # a library's warning is a log line too, not a stray one on stderr


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
