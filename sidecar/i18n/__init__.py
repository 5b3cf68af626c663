"""The language a person reads: gettext catalogs (managed with Babel) and locale formats.

Two catalogs (gettext *domains*) per language, under ``locale/<lang>/LC_MESSAGES/``:
``sidecar`` for what Python says (doctor, setup, the CLI's summaries, problem titles
and details), ``web`` for the status page's own words (``sidecar/web/status.js``).
The ``.po`` files are the source, kept in the repository; the wheel build compiles them
to ``.mo`` (``setup.py``), and a checkout without ``.mo`` reads the ``.po`` directly.

Which language: :func:`negotiate` for a browser's ``Accept-Language``,
:func:`language_from_environment` for a command (``LC_ALL``, ``LC_MESSAGES``,
``LANG``), and ``[ui] language`` in the configuration over both
(:func:`choose`). Code marks a sentence with :func:`_` (the current language, a
context variable a command sets once with :func:`use`) or :data:`N_` (translated
later, e.g. a problem detail, which is rendered in the caller's language).
"""

from __future__ import annotations

import gettext
import io
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import date, datetime, timedelta
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from babel import Locale

# Babel is imported where it is used: a command in English, or a French one whose
# catalog is compiled (.mo, the wheel), starts without paying for it.

__all__ = [
    "DEFAULT",
    "LANGUAGES",
    "N_",
    "_",
    "choose",
    "current",
    "format_date",
    "format_datetime",
    "format_duration",
    "format_number",
    "format_relative",
    "language_from_environment",
    "negotiate",
    "ngettext",
    "translations",
    "use",
    "web_messages",
]

#: What a person can read sidecar in; English is the source language of the catalogs.
LANGUAGES = ("en", "fr", "de")
DEFAULT = "en"
#: The formats of each language as Luxembourg writes them (29/11/2029, 29.11.2029).
_LOCALES = {"en": "en_GB", "fr": "fr_LU", "de": "de_LU"}

_CURRENT: ContextVar[str] = ContextVar("sidecar_language", default=DEFAULT)


def N_(message: str) -> str:
    """Mark *message* for extraction; it is translated where it is shown."""
    return message


@cache
def translations(language: str, domain: str = "sidecar") -> gettext.NullTranslations:
    """The catalog of *domain* in *language* (English: the messages themselves)."""
    if language not in LANGUAGES or language == DEFAULT:
        return gettext.NullTranslations()
    folder = resources.files(__name__) / "locale" / language / "LC_MESSAGES"
    compiled = folder / f"{domain}.mo"
    if compiled.is_file():
        data = compiled.read_bytes()
    else:  # a checkout: the .po is compiled in memory
        from babel.messages import mofile, pofile

        buffer = io.BytesIO()
        with (folder / f"{domain}.po").open("rb") as source:
            mofile.write_mo(buffer, pofile.read_po(source, locale=language))
        data = buffer.getvalue()
    return gettext.GNUTranslations(io.BytesIO(data))


@cache
def web_messages(language: str) -> dict[str, str | list[str]]:
    """The status page's catalog, ``{english: translated}``; a plural message maps its
    singular to its forms (English: empty, the ids are the English text)."""
    if language not in LANGUAGES or language == DEFAULT:
        return {}
    from babel.messages import pofile

    path = resources.files(__name__) / "locale" / language / "LC_MESSAGES" / "web.po"
    with path.open("rb") as source:
        catalog = pofile.read_po(source, locale=language)
    messages: dict[str, str | list[str]] = {}
    for message in catalog:
        if not message.id or message.fuzzy:
            continue
        if isinstance(message.id, str):
            if message.string:
                messages[message.id] = str(message.string)
        elif isinstance(message.string, (tuple, list)) and all(message.string):
            messages[message.id[0]] = [str(form) for form in message.string]
    return messages


def use(language: str) -> None:
    """Make *language* the current one (a command, once, at its start)."""
    _CURRENT.set(language if language in LANGUAGES else DEFAULT)


def current() -> str:
    return _CURRENT.get()


def _(message: str, /, **params: Any) -> str:
    """*message* in the current language, ``str.format``-ed with *params* if any."""
    text = translations(_CURRENT.get()).gettext(message)
    return text.format(**params) if params else text


def ngettext(singular: str, plural: str, n: int, /, **params: Any) -> str:
    """The form of *singular*/*plural* for *n* (``{n}`` is filled in too)."""
    text = translations(_CURRENT.get()).ngettext(singular, plural, n)
    return text.format(n=n, **params)


def negotiate(accept_language: str | None) -> str | None:
    """The best of :data:`LANGUAGES` for an ``Accept-Language`` header, or None."""
    if not accept_language:
        return None
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept_language.split(",")):
        tag, _sep, rest = part.strip().partition(";")
        quality = 1.0
        for param in rest.split(";"):
            name, _eq, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if quality > 0 and primary in LANGUAGES:
            ranked.append((-quality, index, primary))
    return min(ranked)[2] if ranked else None


def language_from_environment(environ: Mapping[str, str]) -> str:
    """The language of a POSIX locale (``fr_LU.UTF-8``), as gettext looks it up."""
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = environ.get(name, "")
        if value:
            primary = value.split(".")[0].split("@")[0].split("_")[0].lower()
            return primary if primary in LANGUAGES else DEFAULT
    return DEFAULT


def choose(configured: str | None, detected: str | None) -> str:
    """``[ui] language`` when it names one, else what the browser or the OS said."""
    if configured and configured in LANGUAGES:
        return configured
    return detected if detected in LANGUAGES else DEFAULT


def _locale(language: str | None) -> Locale:
    from babel import Locale

    return Locale.parse(_LOCALES.get(language or _CURRENT.get(), _LOCALES[DEFAULT]))


def format_date(value: date | datetime, language: str | None = None) -> str:
    """29/11/2029, 29.11.2029: the short date of the language, as Luxembourg writes it."""
    from babel import dates

    pattern = "dd.MM.yyyy" if (language or current()) == "de" else "dd/MM/yyyy"
    return dates.format_date(value, pattern, locale=_locale(language))


def format_datetime(value: datetime, language: str | None = None) -> str:
    """The date and the local time (hours and minutes)."""
    from babel import dates

    local = value.astimezone() if value.tzinfo else value
    time = dates.format_time(local, "HH:mm", locale=_locale(language))
    return f"{format_date(local, language)} {time}"


def format_relative(delta: timedelta, language: str | None = None) -> str:
    """*delta* from now, in words: "in 3 years", "il y a 4 minutes"."""
    from babel import dates

    return dates.format_timedelta(
        delta, add_direction=True, threshold=1.0, locale=_locale(language)
    )


def format_duration(delta: timedelta, language: str | None = None) -> str:
    """A length of time, short: "4 min", "3 Std."."""
    from babel import dates

    return dates.format_timedelta(delta, format="short", threshold=1.0, locale=_locale(language))


def format_number(value: float, language: str | None = None, pattern: str | None = None) -> str:
    """78 699 (fr), 78.699 (de), 2,5 with *pattern* ``0.0``."""
    from babel import numbers

    return numbers.format_decimal(value, format=pattern, locale=_locale(language))
