"""RFC 9457 problem details: the one shape every error response takes.

Handlers raise :class:`Problem`; the error middleware renders it. ``code`` is the
stable, machine-readable part that callers in the field switch on (API.md, Errors).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from aiohttp import web

__all__ = [
    "PROBLEM_TYPE_BASE",
    "Problem",
    "problem_for",
    "problem_response",
    "register_problem_mapper",
]

PROBLEM_TYPE_BASE = "https://sidecar.lu/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"


class Problem(Exception):
    """An error answer: HTTP status, stable code, and a detail for a person."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        title: str | None = None,
        errors: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.errors = list(errors) if errors else None
        self.headers = dict(headers or {})
        self.extra = extra

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if instance:
            body["instance"] = instance
        if self.errors is not None:
            body["errors"] = self.errors
        body.update(self.extra)
        return body


def problem_response(problem: Problem, *, instance: str | None = None) -> web.Response:
    return web.Response(
        status=problem.status,
        body=json.dumps(problem.body(instance), ensure_ascii=False).encode("utf-8"),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=problem.headers,
    )


def bad_parameter(name: str, detail: str) -> Problem:
    return Problem(400, "bad_parameter", f"{name}: {detail}", parameter=name)


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
