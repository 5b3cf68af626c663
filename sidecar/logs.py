"""Structured logging with a last line of defence against leaked secrets.

Code must never pass a token, PIN or passphrase to a logger. In case one slips
through anyway (an exception message from a library, say), every secret the
process knows about is registered with :func:`register_secret` and masked by a
filter on the handler before anything is written.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import threading
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "JsonLinesFormatter",
    "LibraryExceptionText",
    "PrivateFileHandler",
    "PrivateRotatingFileHandler",
    "SecretMask",
    "configure_logging",
    "current_request_id",
    "register_secret",
    "request_extra",
]

_MASK = "[redacted]"
_secrets: set[str] = set()
_secrets_lock = threading.Lock()

# Attributes every LogRecord has; anything else was passed through ``extra=``.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


#: The id of the API request being served (set by the API's outermost middleware), so
#: that code below the API layer can log a cause with it: ``extra=request_extra()``.
current_request_id: ContextVar[str | None] = ContextVar("sidecar_request_id", default=None)


def request_extra() -> dict[str, str]:
    """``{"request_id": ...}`` while an API request is served, else nothing."""
    request_id = current_request_id.get()
    return {"request_id": request_id} if request_id else {}


def register_secret(secret: str) -> None:
    """Mask *secret* wherever it would appear in a log line from now on."""
    if len(secret) >= 4:  # Masking "1" or "" would mangle every line.
        with _secrets_lock:
            _secrets.add(secret)


def _mask(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, _MASK)
    return text


class SecretMask(logging.Filter):
    """Replaces registered secrets in the rendered message and extras."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            record.msg = _mask(record.getMessage())
            record.args = None
            for key, value in list(vars(record).items()):
                if key not in _STANDARD_ATTRS and isinstance(value, str):
                    setattr(record, key, _mask(value))
        return True


class LibraryExceptionText(logging.Filter):
    """Keep only the type of an exception logged by aiohttp, not its message.

    aiohttp logs the errors of its HTTP parser with a message quoting up to ~100
    bytes of the offending line, an ``Authorization`` header included. Our own
    handlers log by type already; this catches a path that is not ours.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("aiohttp") and record.exc_info and record.exc_info[0]:
            record.msg = f"{record.getMessage()} ({record.exc_info[0].__name__})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def _private_file(file: Path) -> None:
    """Create *file* readable by its owner only (0600), or make it so."""
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.close(fd)
    if os.name == "posix":
        os.chmod(file, 0o600)


class PrivateFileHandler(logging.FileHandler):
    """A log file created 0600: a log line may name a patient's message or a client."""

    def _open(self) -> Any:  # logging's hook, called for each (re)opening
        _private_file(Path(self.baseFilename))
        return super()._open()


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """:class:`PrivateFileHandler`, rotating: each new file is created 0600 too."""

    def _open(self) -> Any:
        _private_file(Path(self.baseFilename))
        return super()._open()


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            # The type and message only: a traceback shows paths of the machine.
            entry["error"] = f"{record.exc_info[0].__name__}: {_mask(str(record.exc_info[1]))}"
        return json.dumps(entry, default=str, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {
            k: v
            for k, v in vars(record).items()
            if k not in _STANDARD_ATTRS and not k.startswith("_")
        }
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line

    def formatException(self, ei: Any) -> str:
        return f"{ei[0].__name__}: {_mask(str(ei[1]))}"


def configure_logging(level: str = "info", fmt: str = "text", file: Path | None = None) -> None:
    """Send the ``sidecar`` loggers (and aiohttp's) to stderr or *file*."""
    handler: logging.Handler
    if file is not None:
        file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handler = PrivateFileHandler(file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLinesFormatter() if fmt == "json" else _TextFormatter())
    handler.addFilter(RequestIdFilter())
    handler.addFilter(SecretMask())
    handler.addFilter(LibraryExceptionText())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp's access logger would print its own format; we log requests ourselves.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # pyHanko warns, with a traceback, about every chain it cannot validate while it
    # verifies: that is a finding of the report, not an event of the daemon.
    if level.lower() != "debug":
        logging.getLogger("pyhanko").setLevel(logging.ERROR)


def traceback_text(exc: BaseException, limit: int = 20) -> str:
    """*exc*'s traceback for the log, file names without their directories (the
    machine's paths stay out of the log): ``module.py:12 in function`` per frame."""
    import traceback

    lines = []
    for frame in traceback.extract_tb(exc.__traceback__, limit=-limit):
        lines.append(f"{os.path.basename(frame.filename)}:{frame.lineno} in {frame.name}")
    message = str(exc).splitlines()[0][:300] if str(exc) else ""
    lines.append(f"{type(exc).__name__}: {_mask(message)}")
    return " | ".join(lines)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record logged while a request is served (engines
    below the API layer log without knowing it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request_id = current_request_id.get()
            if request_id is not None:
                record.request_id = request_id
        return True
