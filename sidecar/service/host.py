"""The service's life, independent of the platform's service API.

:class:`ServiceHost` runs the daemon on its own event loop in the thread the
service manager gives it (``SvcDoRun`` on Windows), reports its state through a
:class:`StatusReporter`, and stops it from another thread (``SvcStop``) the same
way SIGTERM does: stop accepting, let requests under way finish (up to
``server.shutdown_timeout``), run the subsystems' cleanup (the outbox returns
undelivered messages to its queue), and only then report *stopped*. Tests drive it
with a fake reporter; :mod:`sidecar.service.windows` plugs in the real one.
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from ..config import ConfigError, Settings
from ..logs import (
    LibraryExceptionText,
    PrivateRotatingFileHandler,
    SecretMask,
    configure_logging,
)
from ..paths import Paths

__all__ = ["LOG_FILE_BACKUPS", "LOG_FILE_BYTES", "ServiceHost", "StatusReporter", "file_handler"]

log = logging.getLogger("sidecar.service")

ReportedState = Literal["start-pending", "running", "stop-pending", "stopped"]

LOG_FILE_BYTES = 10 * 1024**2
LOG_FILE_BACKUPS = 5


class StatusReporter(Protocol):
    """What the host tells the service manager (``SetServiceStatus`` on Windows)."""

    def report(
        self, state: ReportedState, *, wait_hint_ms: int = 0, exit_code: int = 0
    ) -> None: ...


def file_handler(log_dir: Path, formatter: logging.Formatter | None) -> logging.Handler:
    """The service's rotating log file (``sidecar.log`` + 5 backups of 10 MiB backups)."""
    log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    handler = PrivateRotatingFileHandler(
        log_dir / "sidecar.log",
        maxBytes=LOG_FILE_BYTES,
        backupCount=LOG_FILE_BACKUPS,
        encoding="utf-8",
    )
    if formatter is not None:
        handler.setFormatter(formatter)
    handler.addFilter(SecretMask())
    handler.addFilter(LibraryExceptionText())
    return handler


@dataclass
class _Running:
    loop: asyncio.AbstractEventLoop
    stop: asyncio.Event


class ServiceHost:
    """Start, run and stop the daemon for a service manager."""

    def __init__(
        self,
        settings: Settings,
        paths: Paths,
        reporter: StatusReporter,
        *,
        sandbox: bool = False,
        extra_handlers: Callable[[logging.Formatter | None], Sequence[logging.Handler]] = (
            lambda _formatter: ()
        ),
    ) -> None:
        self.settings = settings
        self.paths = paths
        self.reporter = reporter
        self.sandbox = sandbox
        self._extra_handlers = extra_handlers
        self._running: _Running | None = None
        self._started = threading.Event()
        self._stop_requested = threading.Event()
        self.exit_code = 0

    def configure_logging(self) -> None:
        """Rotating file in the log directory, plus the platform's handlers (Event Log)."""
        log_settings = self.settings.log
        configure_logging(log_settings.level, log_settings.format, None)
        root = logging.getLogger()
        console = root.handlers[0]
        formatter = console.formatter
        # A service has no console: the stderr handler goes, the file takes its place.
        root.removeHandler(console)
        root.addHandler(
            file_handler(
                log_settings.file.parent if log_settings.file else self.paths.log_dir, formatter
            )
        )
        for handler in self._extra_handlers(formatter):
            handler.addFilter(SecretMask())
            root.addHandler(handler)

    def run(self) -> int:
        """Blocks until stopped; returns the service's exit code (0: clean stop)."""
        from ..server import StartupError, serve

        self.reporter.report("start-pending", wait_hint_ms=60_000)

        async def main() -> None:
            stop = asyncio.Event()
            self._running = _Running(asyncio.get_running_loop(), stop)
            if self._stop_requested.is_set():  # stopped before the loop existed
                stop.set()

            def ready() -> None:
                self._started.set()
                self.reporter.report("running")

            await serve(self.settings, self.paths, sandbox=self.sandbox, stop=stop, ready=ready)

        try:
            asyncio.run(main())
        except (ConfigError, StartupError) as exc:
            log.error("cannot start: %s", exc)
            self.exit_code = 2 if isinstance(exc, ConfigError) else 1
        except Exception:
            log.exception("the service stopped on an unexpected error")
            self.exit_code = 1
        finally:
            self._running = None
            self.reporter.report("stopped", exit_code=self.exit_code)
        return self.exit_code

    def stop(self) -> None:
        """From another thread: drain and stop (returns at once; :meth:`run` returns later)."""
        # The service manager waits this long before it considers the stop hung.
        hint = int((self.settings.server.shutdown_timeout + 15) * 1000)
        self.reporter.report("stop-pending", wait_hint_ms=hint)
        self._stop_requested.set()
        running = self._running
        if running is not None:
            running.loop.call_soon_threadsafe(running.stop.set)

    def wait_started(self, timeout: float) -> bool:
        return self._started.wait(timeout)
