"""Structured JSON logging: one JSON object per line on stderr.

Pass fields with `extra={"fields": {...}}`; `log_event(logger, level, event, **fields)` does it.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

LOGGER_NAME = "serving"
ACCESS_LOGGER_NAME = "serving.access"
_HANDLER_MARK = "_cine_json_handler"


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "event", ...fields, "exc"}` as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: int = logging.INFO) -> logging.Logger:
    """Give the `serving` logger one JSON handler on stderr (idempotent); return it."""
    logger = logging.getLogger(LOGGER_NAME)
    if not any(getattr(h, _HANDLER_MARK, False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        setattr(handler, _HANDLER_MARK, True)
        logger.addHandler(handler)
        logger.propagate = False
    if logger.level == logging.NOTSET:
        logger.setLevel(level)
    return logger


def log_event(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    """Log `event` with structured `fields` (exc_info=True attaches the current exception).

    Builds the record directly: no caller lookup (a stack walk) on the per-request path.
    """
    exc_info = sys.exc_info() if fields.pop("exc_info", False) else None
    if logger.isEnabledFor(level):
        record = logger.makeRecord(
            logger.name, level, "", 0, event, (), exc_info, extra={"fields": fields}
        )
        logger.handle(record)
