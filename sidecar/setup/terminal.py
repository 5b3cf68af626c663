"""Questions on a terminal: plain ``input`` and ``getpass``, nothing to install.

A secret is read with :func:`getpass.getpass` (not echoed) and is never part of
a question's default or of anything printed back.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from ..i18n import _

__all__ = ["Prompter", "SetupAborted", "no_such_file"]


def no_such_file(answer: str) -> str:
    """Why a path typed as an answer is refused."""
    return _("no such file: {path}", path=answer)


class SetupAborted(Exception):
    """The person ended the questions (Ctrl-D / Ctrl-C), or a flag is missing."""


class Prompter:
    """Asks one question at a time; re-asks until an answer is acceptable."""

    def __init__(
        self,
        out: TextIO = sys.stdout,
        read_line: Callable[[str], str] = input,
        read_secret: Callable[[str], str] = getpass.getpass,
    ) -> None:
        self.out = out
        self._read_line = read_line
        self._read_secret = read_secret

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _line(self, prompt: str) -> str:
        try:
            return self._read_line(prompt).strip()
        except (EOFError, KeyboardInterrupt):
            self.say()
            raise SetupAborted(_("setup ended before the configuration was written")) from None

    def ask(
        self,
        question: str,
        default: str | None = None,
        *,
        check: Callable[[str], str | None] | None = None,
        optional: bool = False,
    ) -> str:
        """A line of text; *check* returns why an answer is refused, or None."""
        shown = f" [{default}]" if default else (" " + _("(empty: none)") if optional else "")
        while True:
            answer = self._line(f"{question}{shown}: ") or (default or "")
            if not answer and not optional:
                self.say("  " + _("an answer is needed"))
                continue
            problem = check(answer) if check is not None and answer else None
            if problem is None:
                return answer
            self.say(f"  {problem}")

    def choose(self, question: str, options: Sequence[str], default: int = 1) -> int:
        """The 0-based index of one of *options*, shown numbered from 1."""
        self.say(question)
        for number, option in enumerate(options, start=1):
            self.say(f"  {number}) {option}")
        while True:
            answer = self._line(_("choice [{default}]: ", default=default)) or str(default)
            if answer.isdigit() and 1 <= int(answer) <= len(options):
                return int(answer) - 1
            self.say("  " + _("type a number from 1 to {last}", last=len(options)))

    def confirm(self, question: str, default: bool = False) -> bool:
        # The answers of every language are accepted whatever the hint shows.
        hint = _("Y/n") if default else _("y/N")
        while True:
            answer = self._line(f"{question} [{hint}]: ").lower()
            if not answer:
                return default
            if answer in ("y", "yes", "o", "oui", "j", "ja"):
                return True
            if answer in ("n", "no", "non", "nee", "nein"):
                return False
            self.say("  " + _("answer y or n"))

    def secret(self, question: str, *, optional: bool = False) -> str:
        """A secret typed without echo; never empty unless *optional*."""
        while True:
            try:
                answer = self._read_secret(f"{question}: ")
            except (EOFError, KeyboardInterrupt):
                self.say()
                raise SetupAborted(_("setup ended before the configuration was written")) from None
            if answer or optional:
                return answer
            self.say("  " + _("an answer is needed"))
