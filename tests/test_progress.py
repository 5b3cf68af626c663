"""sidecar.progress: TTY-aware progress of long command-line work."""

from __future__ import annotations

import io

from sidecar.progress import Progress, progress_iter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_terminal_redraws_one_line_then_summarises() -> None:
    out, clock = io.StringIO(), Clock()
    with Progress(10, "signing", unit="file", stream=out, interactive=True, clock=clock) as p:
        for i in range(10):
            clock.now += 1.0
            p.advance(note=f"note-{i}.xml")
    text = out.getvalue()
    assert "\n" not in text.rstrip("\n")  # redrawn in place, one final newline
    assert text.endswith("\n")
    frames = text.split("\r")
    assert "signing: 1/10 file (10%), 1.0/s, about 9 s left — note-0.xml" in frames
    assert frames[-1].startswith("signing: done: 10 files in 10 s")


def test_log_output_is_plain_lines_every_few_seconds() -> None:
    out, clock = io.StringIO(), Clock()
    with Progress(None, "exporting", unit="entry", stream=out, interactive=False, clock=clock) as p:
        for _ in range(100):
            clock.now += 0.1
            p.advance(failed=False)
        p.advance(failed=True)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    # Nothing for the first half second, then the count and rate (no total known).
    assert lines[0].startswith("exporting: ") and lines[0].endswith(" entries, 10.0/s")
    assert 2 <= len(lines) <= 4  # every 5 s over 10 s, plus the summary
    assert lines[-1] == "exporting: done: 101 entries in 10 s, 1 failed"


def test_quick_work_stays_silent_and_interruptions_say_so() -> None:
    out = io.StringIO()
    assert list(progress_iter(range(3), label="quick", stream=out)) == [0, 1, 2]
    assert out.getvalue() == ""
    clock = Clock()
    try:
        with Progress(5, "batch", stream=out, interactive=False, clock=clock) as p:
            clock.now += 2
            p.advance()
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert out.getvalue().splitlines()[-1] == "batch: stopped after 1 item in 2 s"
