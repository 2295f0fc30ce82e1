"""Structured logging: one JSON object a line (or a readable console form), never a secret."""

from __future__ import annotations

import logging
import sys

import msgspec
import structlog

__all__ = ("configure_logging",)


def _to_json(event: object, **_: object) -> str:
    # msgspec writes a log line several times faster than the json module; unknown types become strings.
    return _encoder.encode(event).decode()


_encoder = msgspec.json.Encoder(enc_hook=str)


def configure_logging(fmt: str = "json", level: str = "info") -> None:
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(serializer=_to_json) if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
