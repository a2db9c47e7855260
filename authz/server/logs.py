"""Operational logs: what the process does (start, reload, store up and down, errors), never decisions.

Decisions go to the decision log (``authz.decisionlog``); these lines go to
standard error, through a queue, so the event loop never waits on a pipe.
``--log-format text`` (the default) writes ``time LEVEL logger: message``;
``--log-format json`` writes one JSON object per line::

    {"@timestamp":"2026-12-01T10:00:00.123Z","log.level":"info","log.logger":"authz.server",
     "message":"policy reloaded ...","event.action":"policy.reloaded","policy.version":"3f2a..."}

The names follow Elastic Common Schema where one exists; a record's
``extra={"event": ..., ...}`` fields are added (``event`` as
``event.action``). A traceback is one ``error.stack_trace`` string, so a
line is always one event.
"""

from __future__ import annotations

import copy
import datetime
import json
import logging
import logging.handlers
import queue
import sys
from typing import Any

#: LogRecord attributes that are not "extra" fields
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
#: extra field names -> their JSON names
_RENAMED = {"event": "event.action", "version": "policy.version", "listener": "tls.listener", "file": "file.path"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        out: dict[str, Any] = {
            "@timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
            "log.level": record.levelname.lower(),
            "log.logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                out[_RENAMED.get(name, name)] = value if isinstance(value, str | int | float | bool) or value is None else str(value)
        if record.exc_info:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["error.stack_trace"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"), default=str)


def formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    return logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


class _QueueHandler(logging.handlers.QueueHandler):
    """Hands the listener a copy with the message made and the traceback as text (records cross threads)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        out = copy.copy(record)
        out.message = out.msg = record.getMessage()
        out.args = None
        if record.exc_info:
            out.exc_text = _PLAIN.formatException(record.exc_info)
        out.exc_info = None
        out.stack_info = None
        return out


_PLAIN = logging.Formatter()


def setup_logging(level: str, fmt: str = "text") -> logging.handlers.QueueListener:
    """Log through a queue to stderr in ``fmt`` ("text" or "json"): the event loop never waits on stderr."""
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    listener = logging.handlers.QueueListener(q, handler)
    root = logging.getLogger()
    root.handlers[:] = [_QueueHandler(q)]
    root.setLevel(level.upper())
    listener.start()
    return listener


__all__ = ["JsonFormatter", "formatter", "setup_logging"]
