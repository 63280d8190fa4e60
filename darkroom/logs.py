"""Log lines for every Darkroom process: one JSON object per line (or the human text format),
carrying the request id or job id being handled without any call site passing it.

The ids live in a context variable: `log_context(job_id=...)` around a job, the API's request
middleware around a request. A filter on the one root handler copies them onto each record, so
third-party lines logged meanwhile (SQLAlchemy, botocore, kombu) carry them too.
Context variables rather than thread-locals because the API runs many requests on one event-loop
thread, and Starlette copies the context into the threads that run sync endpoints.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Literal

LogFormat = Literal["json", "text"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

_EMPTY: Mapping[str, str] = MappingProxyType({})
_context: ContextVar[Mapping[str, str]] = ContextVar("darkroom_log_context", default=_EMPTY)

# Attributes every LogRecord has; anything else on a record came from `extra=` or the filter.
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
# Line separators that json.dumps(ensure_ascii=False) leaves raw; str.splitlines() would break a
# line on them, so they are escaped like control characters.
_SEPARATORS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


@contextmanager
def log_context(**fields: str) -> Iterator[None]:
    """Bind fields (`job_id`, `request_id`, ...) to every line logged inside the block."""
    token = _context.set(MappingProxyType({**_context.get(), **fields}))
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields: str) -> None:
    """Add fields learned part-way through a `log_context` block; they end with that block
    (outside one they would stay on every later line of this thread or task)."""
    _context.set(MappingProxyType({**_context.get(), **fields}))


def current_context() -> Mapping[str, str]:
    return _context.get()


class ContextFilter(logging.Filter):
    """Copies the bound ids onto each record; an explicit `extra=` of the same name wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


# uvicorn's copy of its message with ANSI colour codes.
_DROPPED = frozenset({"color_message"})


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _RECORD_ATTRIBUTES and key not in _DROPPED and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", <bound ids and extras>, "exception"?}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, object] = {
            "ts": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage().rstrip("\n"),  # warnings end theirs with one
        }
        extras = _extras(record)
        for key in ("request_id", "job_id"):  # first, where a reader looks for them
            if key in extras:
                line[key] = extras.pop(key)
        for key, value in extras.items():
            line.setdefault(key, value)
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # default=str: a Celery extra or an exception object must not cost the line.
        return json.dumps(line, default=str, ensure_ascii=False).translate(_SEPARATORS)


class TextFormatter(logging.Formatter):
    """The human format, with the bound ids appended when there are any."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = " ".join(
            f"{key}={getattr(record, key)}"
            for key in ("request_id", "job_id")
            if hasattr(record, key)
        )
        if not ids:
            return text
        first, newline, rest = text.partition("\n")  # after the message, before any traceback
        return f"{first} [{ids}]{newline}{rest}"


def make_handler(log_format: LogFormat) -> logging.Handler:
    handler = logging.StreamHandler()  # stderr: unbuffered per line, and what the services capture
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    return handler


def configure_logging(level: str | int, log_format: LogFormat) -> None:
    """One root handler for the whole process; every library logger propagates to it."""
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(make_handler(log_format))
    root.setLevel(level)
    # uvicorn's default config gives these their own handlers and format; route them to ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # Seven "setup plugin" lines from every process that migrates say nothing to an operator.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    logging.captureWarnings(True)  # warnings.warn() would otherwise print raw text to stderr
    if log_format == "json":
        _log_uncaught_exceptions()
        # tqdm bars (weights loading, tiny models being saved) are not events, and their \r-drawn
        # lines would break the one-object-per-line promise. Set before transformers is imported,
        # and inherited by the worker's child; an operator's own setting wins.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    _keep_celery_off_the_handlers(json_lines=log_format == "json")


def _log_uncaught_exceptions() -> None:
    """A crash's traceback becomes one JSON line instead of many raw ones."""
    crash = logging.getLogger("darkroom.crash")

    def on_uncaught(kind, value, traceback) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, value, traceback)
            return
        crash.critical("uncaught %s: %s", kind.__name__, value, exc_info=(kind, value, traceback))

    def on_thread_uncaught(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        thread = args.thread.name if args.thread else "?"
        crash.critical(
            "uncaught %s in thread %s: %s",
            args.exc_type.__name__,
            thread,
            args.exc_value,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )

    sys.excepthook = on_uncaught
    threading.excepthook = on_thread_uncaught


def _keep_celery_off_the_handlers(*, json_lines: bool) -> None:
    """A receiver on Celery's `setup_logging` signal tells a worker that logging is configured:
    it then adds no handler of its own (root, `celery.task`, multiprocessing) and does not swap
    stdout/stderr for a logger. `worker_hijack_root_logger=False` alone still leaves it adding
    handlers in its own format.

    Two things a Celery worker prints rather than logs: the start-up banner (its "ready" and
    "Connected to" lines are logged anyway, so in JSON mode the worker is made quiet), and the
    "worker: Warm shutdown" notice, written with os.write from the signal handler. That one is
    kept but written as a JSON line, still straight to the file descriptor: a signal handler must
    not take the logging module's locks."""
    import celery.apps.worker
    from celery.signals import celeryd_init, setup_logging

    setup_logging.connect(_celery_setup_logging, weak=False)
    if json_lines:
        celeryd_init.connect(_quiet_banner, weak=False)
        celery.apps.worker.safe_say = _say_as_json


def _celery_setup_logging(**_kwargs) -> None:
    """Nothing to do: `configure_logging` ran first; that a receiver exists keeps Celery out."""


def _quiet_banner(instance=None, **_kwargs) -> None:
    if instance is not None:
        instance.quiet = True


def _say_as_json(msg: str, f=sys.__stderr__) -> None:
    """Stands in for `celery.apps.worker.safe_say`, same signature."""
    record = logging.makeLogRecord(
        {
            "name": "celery.apps.worker",
            "levelno": logging.INFO,
            "levelname": "INFO",
            "msg": msg.strip(),
        }
    )
    try:
        os.write(f.fileno(), (JsonFormatter().format(record) + "\n").encode())
    except (OSError, ValueError):
        pass  # as Celery's own: losing a notice must never stop a shutdown
