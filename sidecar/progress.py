"""Progress of long command-line work (batch signing of a folder, ``audit export``,
re-upgrading queued signatures to B-LT).

On a terminal: one line redrawn in place (done/total, percentage, rate, time left,
the current item). Elsewhere (a log file, a pipe, the Windows service's console):
a plain line every few seconds and a summary at the end, so that logs stay readable.
Always on stderr, so that stdout stays the command's data (``audit export > file``).
Nothing is shown for work that ends within :attr:`Progress.delay` seconds.

::

    with Progress(len(files), "signing") as progress:
        for file in files:
            sign(file)
            progress.advance(note=file.name)

    for entry in progress_iter(journal.entries(), label="exporting", unit="entry"):
        ...
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from types import TracebackType
from typing import TextIO, TypeVar

from .i18n import _, format_number, ngettext

__all__ = ["Progress", "progress_iter"]

T = TypeVar("T")


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds // 3600} h {round(seconds % 3600 / 60)} min"


def _units(unit: str, count: int) -> str:
    """The word for *count* items of *unit* ("file", "entry", "item") in the current
    language; spelled out per unit so that the catalogs have each plural."""
    if unit == "file":
        return ngettext("file", "files", count)
    if unit == "entry":
        return ngettext("entry", "entries", count)
    if unit == "item":
        return ngettext("item", "items", count)
    if count == 1:  # a unit of a caller's own, English
        return unit
    return unit[:-1] + "ies" if unit.endswith("y") else unit + "s"


class Progress:
    """Progress of *total* items (None: unknown) on *stream* (stderr by default)."""

    def __init__(
        self,
        total: int | None,
        label: str,
        *,
        unit: str = "item",
        stream: TextIO | None = None,
        interactive: bool | None = None,
        delay: float = 0.5,
        redraw_interval: float = 0.1,
        log_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        if interactive is None:
            isatty = getattr(self.stream, "isatty", None)
            interactive = bool(isatty and isatty())
        self.interactive = interactive
        self.delay = delay
        self.redraw_interval = redraw_interval
        self.log_interval = log_interval
        self._clock = clock
        self.done = 0
        self.failed = 0
        self._started = clock()
        self._last_shown: float | None = None
        self._line_width = 0
        self._shown_any = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish(interrupted=exc_type is not None)

    def advance(self, n: int = 1, *, note: str | None = None, failed: bool = False) -> None:
        """*n* more items done (*failed*: done, but without success)."""
        self.done += n
        if failed:
            self.failed += n
        now = self._clock()
        if now - self._started < self.delay:
            return
        interval = self.redraw_interval if self.interactive else self.log_interval
        if self._last_shown is None or now - self._last_shown >= interval:
            self._show(self._status(now, note))
            self._last_shown = now

    def _status(self, now: float, note: str | None) -> str:
        elapsed = now - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        units = _units(self.unit, self.done)
        if self.total:
            percent = self.done * 100 // self.total
            text = _(
                "{label}: {done}/{total} {units} ({percent}%)",
                label=self.label,
                done=self.done,
                total=self.total,
                units=units,
                percent=percent,
            )
        else:
            text = f"{self.label}: {self.done} {units}"
        if rate > 0:
            text += f", {format_number(rate, pattern='0.0')}/s"
            if self.total and self.done < self.total:
                left = _duration((self.total - self.done) / rate)
                text += ", " + _("about {time} left", time=left)
        if self.failed:
            text += ", " + _("{failed} failed", failed=self.failed)
        if note:
            text += f" — {note}"
        return text

    def _show(self, text: str) -> None:
        self._shown_any = True
        if self.interactive:
            width = shutil.get_terminal_size((80, 24)).columns - 1
            text = text[:width]
            # Pad over the previous, possibly longer line instead of a terminal escape.
            padding = " " * max(0, self._line_width - len(text))
            self.stream.write(f"\r{text}{padding}")
            self._line_width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self, *, interrupted: bool = False) -> None:
        """The summary line (only when progress was shown: quick work stays silent)."""
        if not self._shown_any:
            return
        elapsed = self._clock() - self._started
        units = _units(self.unit, self.done)
        summary = (
            _("{label}: stopped after {done} {units} in {time}")
            if interrupted
            else _("{label}: done: {done} {units} in {time}")
        )
        text = summary.format(
            label=self.label, done=self.done, units=units, time=_duration(elapsed)
        )
        if self.failed:
            text += ", " + _("{failed} failed", failed=self.failed)
        if self.interactive:
            padding = " " * max(0, self._line_width - len(text))
            self.stream.write(f"\r{text}{padding}\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self._shown_any = False


def progress_iter(
    items: Iterable[T],
    *,
    label: str,
    total: int | None = None,
    unit: str = "item",
    stream: TextIO | None = None,
) -> Iterator[T]:
    """Yield *items*, showing progress; *total* defaults to ``len(items)`` if it has one."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    with Progress(total, label, unit=unit, stream=stream) as progress:
        for item in items:
            yield item
            progress.advance()
