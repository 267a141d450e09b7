"""Log line formats that carry a request id and, by construction, no personal data.

A formatter here writes only known fields: time, level, logger, message, request id, the
allow-listed extras in EXTRA_FIELDS, and an exception's type and frames. Exception messages
are left out, because they can quote what a person typed (a driver error quoting a value, a
ValueError quoting its input); the log call's own message says what failed.
"""

from __future__ import annotations

import json
import logging
import random
import re
import sys
import traceback
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

from flask import g, has_request_context

# A proxy's request id is kept only in this shape, so a header cannot smuggle text into logs.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Fields a log call may add with `extra=`; any other extra is dropped, not written.
EXTRA_FIELDS = ("method", "route", "status", "duration_ms")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
FORMATS = ("json", "text")


def accept_request_id(candidate: str | None) -> str:
    """Return `candidate` when it is a well-formed request id, else a new random one."""
    if candidate and REQUEST_ID_PATTERN.fullmatch(candidate):
        return candidate
    # An id correlates lines; it guards nothing, so it need not be unguessable, and
    # getrandbits costs far less than os.urandom on every request.
    return f"{random.getrandbits(128):032x}"


def current_request_id() -> str | None:
    """Return the id of the request being handled by this thread, if any."""
    if not has_request_context():
        return None
    return g.get("request_id")


class RequestIdFilter(logging.Filter):
    """Stamp every record with the current request's id ("-" outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id() or "-"
        return True


def exception_chain(exc: BaseException) -> list[BaseException]:
    """Return the exception and the ones it was raised from or during, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return chain


def type_name(exc: BaseException) -> str:
    kind = type(exc)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def frames(tb: TracebackType | None) -> list[str]:
    """Return "file:line in function" for each frame, without source lines or locals."""
    summary = traceback.StackSummary.extract(traceback.walk_tb(tb), lookup_lines=False)
    return [f"{frame.filename}:{frame.lineno} in {frame.name}" for frame in summary]


def exception_fields(exc: BaseException) -> list[dict[str, Any]]:
    """Describe an exception chain by types and frames only."""
    return [
        {"type": type_name(item), "frames": frames(item.__traceback__)}
        for item in exception_chain(exc)
    ]


class JsonFormatter(logging.Formatter):
    """One JSON object per line, holding only known fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", "-")
        if request_id != "-":
            line["request_id"] = request_id
        for key in EXTRA_FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                line[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            line["exception"] = exception_fields(record.exc_info[1])
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """A readable line for `make run`, with the same exception rule as JSON."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        # Not super().format(): it would append record.exc_text, which another handler may
        # already have filled with the full traceback, messages included.
        record.message = record.getMessage()
        record.asctime = self.formatTime(record)
        record.__dict__.setdefault("request_id", "-")
        line = self.formatMessage(record)
        if record.exc_info and record.exc_info[1] is not None:
            for item in exception_fields(record.exc_info[1]):
                line += f"\n  {item['type']}" + "".join(f"\n    {f}" for f in item["frames"])
        return line


def make_handler(log_format: str, stream: TextIO | None = None) -> logging.Handler:
    """Return a stream handler (stdout by default) writing `log_format` ("json" or "text")."""
    if log_format not in FORMATS:
        raise ValueError(f"PORTAL_LOG_FORMAT must be one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    return handler
