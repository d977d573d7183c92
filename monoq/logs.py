"""Logging setup from ``[monoq] log_level`` and ``log_format``; only the CLI calls it."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

from monoq.core.codec import json_encode


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and job_id when present."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None)
        if job_id is not None:
            entry["job_id"] = job_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json_encode(entry).decode()


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Send monoq's logs (and uvicorn's) to stderr in ``fmt`` at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log is per request; keep it at WARNING unless debugging.
    logging.getLogger("uvicorn.access").setLevel(level if level == "DEBUG" else "WARNING")
    # httpx logs every request of the http job kind at INFO with its full URL, query string
    # included (which may carry credentials): per job, so only when debugging.
    logging.getLogger("httpx").setLevel(level if level == "DEBUG" else "WARNING")
    # httpcore's DEBUG traces hold the raw request and response headers (secret headers the
    # http job kind resolved, Set-Cookie of the servers it calls): never, not even debugging.
    logging.getLogger("httpcore").setLevel("WARNING")
