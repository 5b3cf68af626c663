"""RFC 9457 problem details: the one shape every error response takes.

Handlers raise :class:`Problem`; the error middleware renders it. ``code`` is the
stable, machine-readable part that callers in the field switch on (API.md, Errors).

``title`` and ``detail`` are English unless the caller asked for French or German
(``Accept-Language``; the error middleware puts it in :data:`problem_language`): then
the title, and a detail made from a marked template (``Problem(..., N_("no route
{method} {path}"), params={...})``), come in that language, and the answer says so
with ``Content-Language``. A detail without a template or a translation stays English.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from datetime import date
from http import HTTPStatus
from typing import Any

from aiohttp import web

from ..i18n import N_, format_date, negotiate, translations
from ..keys.access import KeyNotAllowed

__all__ = [
    "PROBLEM_TYPE_BASE",
    "Problem",
    "problem_for",
    "problem_language",
    "problem_response",
    "register_problem_mapper",
]

PROBLEM_TYPE_BASE = "https://sidecar.lu/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"

#: The request's ``Accept-Language``, set by the error middleware for the answer.
problem_language: ContextVar[str | None] = ContextVar("problem_language", default=None)

#: The titles, marked for the catalogs (HTTPStatus's phrases, as the English title).
_TITLES = {
    400: N_("Bad Request"),
    401: N_("Unauthorized"),
    403: N_("Forbidden"),
    404: N_("Not Found"),
    405: N_("Method Not Allowed"),
    406: N_("Not Acceptable"),
    408: N_("Request Timeout"),
    409: N_("Conflict"),
    410: N_("Gone"),
    411: N_("Length Required"),
    413: N_("Request Entity Too Large"),
    415: N_("Unsupported Media Type"),
    422: N_("Unprocessable Entity"),
    423: N_("Locked"),
    428: N_("Precondition Required"),
    429: N_("Too Many Requests"),
    431: N_("Request Header Fields Too Large"),
    500: N_("Internal Server Error"),
    501: N_("Not Implemented"),
    502: N_("Bad Gateway"),
    503: N_("Service Unavailable"),
    504: N_("Gateway Timeout"),
    507: N_("Insufficient Storage"),
}


class Problem(Exception):
    """An error answer: HTTP status, stable code, and a detail for a person.

    With *params*, *detail* is a template (``str.format``) marked with ``N_``: the
    English detail is filled in now, a translated one when the answer is rendered.
    *translation* (a marked template and its parameters) stands in for a detail made
    below the API, whose English text stays as it is but has no template of its own:
    another language gets that sentence (e.g. one per reason a key is locked).
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        params: Mapping[str, Any] | None = None,
        translation: tuple[str, Mapping[str, Any]] | None = None,
        title: str | None = None,
        errors: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.template, self.params = translation or (detail, params or {})
        detail = detail.format(**params) if params else detail
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title or _TITLES.get(status) or HTTPStatus(status).phrase
        self.errors = list(errors) if errors else None
        self.headers = dict(headers or {})
        self.extra = extra

    def translated(self, language: str) -> tuple[str, str]:
        """The title and detail in *language*; English where the catalog has nothing."""
        catalog = translations(language)
        title = catalog.gettext(self.title)
        template = catalog.gettext(self.template)
        if template is self.template or template == self.template:
            return title, self.detail
        # A date is written as the reader's language writes it (29/11/2029, 29.11.2029).
        params = {
            name: format_date(value, language) if isinstance(value, date) else value
            for name, value in self.params.items()
        }
        try:
            return title, template.format(**params) if params else template
        except (KeyError, IndexError, ValueError):  # a broken translation: English
            return title, self.detail

    def body(self, instance: str | None = None, language: str | None = None) -> dict[str, Any]:
        title, detail = self.translated(language) if language else (self.title, self.detail)
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.code,
            "title": title,
            "status": self.status,
            "detail": detail,
            "code": self.code,
        }
        if instance:
            body["instance"] = instance
        if self.errors is not None:
            body["errors"] = self.errors
        body.update(self.extra)
        return body


def problem_response(problem: Problem, *, instance: str | None = None) -> web.Response:
    """The answer; in the caller's language when its ``Accept-Language`` named one."""
    language = negotiate(problem_language.get())
    headers = dict(problem.headers)
    if language is not None:
        headers["Content-Language"] = language
    return web.Response(
        status=problem.status,
        body=json.dumps(problem.body(instance, language), ensure_ascii=False).encode("utf-8"),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


def bad_parameter(name: str, detail: str, *, params: Mapping[str, Any] | None = None) -> Problem:
    """400 ``bad_parameter`` naming *name*: ``"{name}: {detail}"`` in English; with
    *params* (``{}`` if it has none) *detail* is a template marked ``N_("{name}: ...")``,
    translated like any other, and ``{name}`` is filled in with the rest."""
    if params is None:
        return Problem(400, "bad_parameter", f"{name}: {detail}", parameter=name)
    return Problem(400, "bad_parameter", detail, params={"name": name, **params}, parameter=name)


_MAPPERS: list[tuple[type[BaseException], Callable[[Any], Problem]]] = []


def register_problem_mapper(
    exc_type: type[BaseException], mapper: Callable[[Any], Problem]
) -> None:
    """Answer *exc_type* (raised by an engine, which knows no HTTP) as ``mapper(exc)``.

    Lets the lower layers raise their own typed errors (``KeyLocked``, a TSA
    failure...) while the API layer alone decides their status and code.
    """
    _MAPPERS.append((exc_type, mapper))


def problem_for(exc: BaseException) -> Problem | None:
    """The problem for a domain exception, most specific registration first."""
    for exc_type, mapper in sorted(_MAPPERS, key=lambda m: -len(m[0].__mro__)):
        if isinstance(exc, exc_type):
            return mapper(exc)
    return None


def _key_not_allowed(exc: KeyNotAllowed) -> Problem:
    """A key the client may not use: named, its id (the client's other keys never are)."""
    if exc.reason == "key_required":
        return Problem(
            400,
            "key_required",
            N_("client {client!r} has several keys, none the default: name one with ?key="),
            params={"client": exc.client},
        )
    return Problem(
        403,
        "key_not_allowed",
        N_("client {client!r} may not sign with key {key!r}"),
        params={"client": exc.client, "key": exc.key_id},
        key=exc.key_id,
    )


register_problem_mapper(KeyNotAllowed, _key_not_allowed)
