"""Structured logging: one JSON object a line (or a readable console form), never a secret."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import MutableMapping
from typing import Any

import msgspec
import structlog

__all__ = ("configure_logging", "log_request")


def _to_json(event: object, **_: object) -> str:
    # msgspec writes a log line several times faster than the json module; unknown types become strings.
    return _encoder.encode(event).decode()


_encoder = msgspec.json.Encoder(enc_hook=str)


class _LineWriter:
    """structlog's logger: one ``write`` of the whole line under a lock, flushed, as ``print(..., flush=True)``.

    The access log writes through it too without going through structlog, so lines from other threads
    never interleave with it. The stream is looked up at each write (standard error, whatever it is now).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def msg(self, message: str) -> None:
        with self.lock:
            stream = sys.stderr
            stream.write(message + "\n")
            stream.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


_direct: _LineWriter | None = None
"""Where the access log goes directly, when the format is JSON and the level lets info lines through."""


def log_request(
    request_id: str,
    method: str,
    path: str,
    status: int,
    duration_ms: float,
    client: str,
    portal: str | None,
    user_id: int | None,
) -> None:
    """The access log line of one request: the line structlog's chain would write, in a fraction of its time.

    Its processors cost more than the request's own work on the hot routes; for this one event, whose fields
    are known, the same JSON object (same keys, same order, the same ISO timestamp) is encoded at once.
    The console format goes through structlog as before.
    """
    writer = _direct
    if writer is None:
        # A fresh proxy: it follows the configuration in force now (a cached one keeps its first).
        structlog.get_logger("smtpsettings.access").info(
            "request",
            request_id=request_id,
            method=method,
            path=path,
            status=status,
            duration_ms=duration_ms,
            client=client,
            portal=portal,
            user_id=user_id,
        )
        return
    line: dict[str, Any] = {
        "request_id": request_id,
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": duration_ms,
        "client": client,
        "portal": portal,
        "user_id": user_id,
        "event": "request",
        "level": "info",
        "timestamp": _timestamp(),
    }
    writer.msg(_encoder.encode(line).decode())


_second: tuple[int, str] = (0, "")
"""The last whole second formatted, and its text: the access log stamps many lines within each second."""


def _timestamp() -> str:
    """Now in UTC as structlog's ISO stamp (``2026-11-30T00:24:06.123456Z``), the date part formatted once a second."""
    global _second
    now = time.time()
    whole = int(now)
    if whole != _second[0]:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_second[1]}.{int((now - whole) * 1_000_000):06d}Z"


_LEVELS = {"warn": "warning", "exception": "error"}
"""Method names that are not their level's name (structlog's ``add_log_level`` maps them alike)."""


def _level_and_time(_: object, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog's ``add_log_level`` and ISO ``TimeStamper`` in one step, the stamp's date formatted once a second.

    Every accepted and every delivered message writes a line: the stock pair cost a good part of each.
    """
    event_dict["level"] = _LEVELS.get(method_name, method_name)
    event_dict["timestamp"] = _timestamp()
    return event_dict


def configure_logging(fmt: str = "json", level: str = "info") -> None:
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(serializer=_to_json) if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    writer = _LineWriter()
    structlog.configure(
        # No contextvars merging: nothing binds any, and it copies the whole context for every line.
        processors=[_level_and_time, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=lambda *_: writer,
        cache_logger_on_first_use=True,
    )
    global _direct
    threshold = logging.getLevelName(level.upper())
    _direct = writer if fmt == "json" and isinstance(threshold, int) and threshold <= logging.INFO else None
    _route_standard_logging(writer, renderer, threshold if isinstance(threshold, int) else logging.INFO)


class _StandardHandler(logging.Handler):
    """Writes the standard library's records (asyncio, ssl, aiosmtpd, …) as our lines, through our writer."""

    def __init__(self, writer: _LineWriter, formatter: logging.Formatter) -> None:
        super().__init__()
        self._writer = writer
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._writer.msg(self.format(record))
        except Exception:
            self.handleError(record)


def _route_standard_logging(writer: _LineWriter, renderer: structlog.types.Processor, threshold: int) -> None:
    """Send every library's log through the same renderer: one JSON object a line, a traceback inside it.

    Libraries speak at warning and above only: their info lines (aiosmtpd logs each connection) are ours
    to write, with the fields we choose.
    """
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StandardHandler)]:
        root.removeHandler(handler)
    root.addHandler(_StandardHandler(writer, formatter))
    root.setLevel(max(threshold, logging.WARNING))
