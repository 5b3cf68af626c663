"""RFC 9457 problem details: the one shape every error response takes.

Handlers raise :class:`Problem`; the error middleware renders it. ``code`` is the
stable, machine-readable part that callers in the field switch on (API.md, Errors).

``title`` and ``detail`` are English unless the caller asked for French or German
(``Accept-Language``; the error middleware puts it in :data:`problem_language`): then
the title, and a detail made from a marked template (``Problem(..., N_("no route
{method} {path}"), params={...})``), come in that language, and the answer says so
with ``Content-Language``. A detail without a template or a translation stays English.

Below the API, errors know no HTTP (:mod:`sidecar.errors`: a root, one family per
cause). :data:`PROBLEMS` is the one table that answers them: the error middleware
(and the batches, the metrics) ask :func:`problem_for`, which takes the entry of the
most specific class of the error. Every family is in it, so an error class added
later is answered by its family, never as an unexplained 500.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from datetime import date
from http import HTTPStatus
from typing import Any

from aiohttp import web

from ..errors import (
    BadInput,
    Busy,
    InternalError,
    KeyUnavailable,
    Misconfigured,
    NotFound,
    Refused,
    SidecarError,
    StorageError,
    UpstreamError,
    UpstreamFailed,
    UpstreamSlow,
    UpstreamUnavailable,
)
from ..i18n import N_, format_date, negotiate, translations
from ..keys import CertificateNotValid, KeyLocked, KeyNotFound
from ..keys.access import KeyNotAllowed
from ..operations.batches import InvalidLevel, UnknownProfile
from ..operations.qualification import NotQualified
from ..signing.forms import FormError, SchemaViolation
from ..signing.pades import PadesError
from ..signing.pdf_checks import PdfRefused
from ..signing.sources import CertificateUnusable, UpstreamFailure
from ..signing.xades import AlreadySigned, PlacementError
from ..signing.xml_safety import ForbiddenDtd, MalformedXml, XmlInputError, XmlLimitExceeded
from ..trust.tsa import TsaError, TsaRejected, TsaReplyError, TsaTimeout, TsaUnavailable
from .qualification import HEADER as QUALIFICATION_HEADER

__all__ = [
    "PROBLEMS",
    "PROBLEM_TYPE_BASE",
    "Problem",
    "pades_problem",
    "problem_for",
    "problem_language",
    "problem_response",
    "tsa_problem",
    "upstream_problem",
    "xml_problem",
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


# ---------------------------------------------------------------- the one table
#
# Below: how each error of the layers under the API is answered. The engines raise
# their own typed errors (``KeyLocked``, a TSA failure...) and know no HTTP; this
# table alone decides their status and code.

Mapper = Callable[[Any], Problem]

#: Seconds a caller is told to wait when an upstream gave no advice of its own.
UPSTREAM_RETRY_AFTER = 30
#: Seconds a caller is told to wait when the disk cannot take a write.
STORAGE_RETRY_AFTER = 60
#: Seconds a caller is told to wait for a signing worker, failing advice.
BUSY_RETRY_AFTER = 5

#: What another language than English says for each reason a key is locked (the
#: English detail, from the key layer, says more: which key, which token).
_LOCKED = {
    "token_absent": N_("the signing key's smartcard or token is not plugged in"),
    "pin_missing": N_("no PIN is stored for the signing key"),
    "pin_incorrect": N_("the stored PIN of the signing key is wrong"),
    "pin_final_try": N_(
        "the stored PIN was refused before and one more try would block the card: nothing was tried"
    ),
    "pin_locked": N_("the card's PIN is blocked: unblock it with the PUK"),
    "pinpad_unavailable": N_("the card reader's PIN pad does not answer"),
    "passphrase_missing": N_("no passphrase is stored for the signing key's file"),
    "passphrase_incorrect": N_("the stored passphrase of the signing key's file is wrong"),
    "key_not_found": N_("the signing key is not on the token"),
    "token_error": N_("the signing key's token reports an error"),
}
_NOT_VALID = {
    "expired": N_("the signing certificate expired on {date}"),
    "not_yet_valid": N_("the signing certificate is valid only from {date}"),
}
#: The status of each :class:`PdfRefused` code (an unreadable PDF is malformed input;
#: a readable one sidecar will not sign is unprocessable).
_PDF_STATUS = {
    "malformed_pdf": 400,
    "unsupported_pdf": 422,
    "pdf_certified": 422,
    "pdf_locked": 422,
}


def _detail(exc: BaseException) -> str:
    """The error's text for a person: its ``detail`` when it has one, else its message."""
    detail = getattr(exc, "detail", None)
    return detail if isinstance(detail, str) and detail else str(exc)


def _retry_after(exc: SidecarError, default: int) -> dict[str, str]:
    """The ``Retry-After`` header: the error's advice in whole seconds, else *default*."""
    seconds = exc.retry_after
    return {"Retry-After": str(max(1, math.ceil(seconds)) if seconds else default)}


def xml_problem(exc: XmlInputError) -> Problem:
    """The answer to refused XML (also used by the verify route)."""
    if isinstance(exc, ForbiddenDtd):
        return Problem(422, "forbidden_dtd", exc.detail)
    if isinstance(exc, MalformedXml):
        extra: dict[str, Any] = {}
        if exc.line is not None:
            extra = {"line": exc.line, "column": exc.column}
        return Problem(400, "malformed_xml", exc.detail, **extra)
    if isinstance(exc, XmlLimitExceeded):
        return Problem(422, "xml_limits", exc.detail)
    if isinstance(exc, AlreadySigned):
        return Problem(422, "already_signed", exc.detail)
    if isinstance(exc, PlacementError):
        return Problem(422, "signature_placement", exc.detail)
    return Problem(422, "unsupported_xml", exc.detail)


def upstream_problem(exc: UpstreamFailure) -> Problem:
    """The TSA or a revocation service could not give what the asked level needs."""
    extra: dict[str, Any] = {"service": exc.service}
    if exc.kind == "unavailable":
        headers = {"Retry-After": str(exc.retry_after or UPSTREAM_RETRY_AFTER)}
        return Problem(503, "upstream_unavailable", exc.detail, headers=headers, **extra)
    if exc.kind == "timeout":
        return Problem(504, "upstream_timeout", exc.detail, **extra)
    return Problem(502, "upstream_error", exc.detail, **extra)


def tsa_problem(exc: TsaError) -> Problem:
    """The API's answer to a TSA failure (also for the signing routes' B-T and above)."""
    extra: dict[str, Any] = {"reason": exc.reason}
    if isinstance(exc, TsaUnavailable):
        retry = max(1, math.ceil(exc.retry_after))
        return Problem(
            503,
            "upstream_unavailable",
            str(exc),
            headers={"Retry-After": str(retry)},
            **extra,
        )
    if isinstance(exc, TsaTimeout):
        return Problem(504, "upstream_timeout", str(exc), **extra)
    if isinstance(exc, TsaRejected):
        return Problem(502, "upstream_error", str(exc), fail_info=list(exc.fail_info), **extra)
    if isinstance(exc, TsaReplyError):
        return Problem(502, "upstream_error", str(exc), **extra)
    return Problem(502, "upstream_error", str(exc), **extra)


def pdf_refused(exc: PdfRefused) -> Problem:
    return Problem(_PDF_STATUS.get(exc.code, 422), exc.code, exc.detail)


def pades_problem(exc: PadesError) -> Problem:
    """How the PDF engine's failures are answered."""
    if exc.reason in {"tsa_not_configured", "revocation_unavailable"}:
        return Problem(
            503,
            "upstream_unavailable",
            exc.detail,
            headers={"Retry-After": str(UPSTREAM_RETRY_AFTER)},
            reason=exc.reason,
        )
    if exc.reason in {"certificate_invalid", "certificate_revoked"}:
        return Problem(422, "certificate_not_valid", exc.detail, reason=exc.reason)
    if exc.reason == "pdfa_broken":
        return Problem(422, "unsupported_pdf", exc.detail, reason=exc.reason)
    return Problem(500, "internal_error", "the PDF could not be signed", reason=exc.reason)


def _unusable(exc: CertificateUnusable) -> Problem:
    return Problem(422, "certificate_not_valid", exc.detail, reason=exc.reason)


def _schema_violation(exc: SchemaViolation) -> Problem:
    detail = (
        f"the document does not match the XSD of profile {exc.profile!r}"
        if exc.stage == "input"
        else f"the signed result does not match the XSD of profile {exc.profile!r}"
    )
    return Problem(
        422,
        "schema_violation",
        detail,
        errors=[e.as_json() for e in exc.errors],
        profile=exc.profile,
        stage=exc.stage,
    )


def _form_error(exc: FormError) -> Problem:
    if exc.reason == "bad_base64":
        return Problem(400, "malformed_pdf", exc.detail, reason=exc.reason)
    if exc.reason in {"pdf_missing", "pdf_unexpected"}:
        return Problem(400, "bad_parameter", exc.detail, parameter="pdf", reason=exc.reason)
    if exc.reason == "element_missing":
        return Problem(422, "schema_violation", exc.detail, reason=exc.reason, errors=[])
    return Problem(503, "upstream_unavailable", exc.detail, reason=exc.reason)


def _locked(exc: KeyLocked) -> Problem:
    extra: dict[str, Any] = {"reason": exc.reason}
    if exc.key_id:
        extra["key"] = exc.key_id
    if exc.retries_left is not None:
        extra["retries_left"] = exc.retries_left
    if exc.token_flags:
        extra["token_flags"] = list(exc.token_flags)
    translation: tuple[str, dict[str, object]] | None = (
        (_LOCKED[exc.reason], {}) if exc.reason in _LOCKED else None
    )
    return Problem(423, "key_locked", exc.detail, translation=translation, **extra)


def _not_valid(exc: CertificateNotValid) -> Problem:
    when = exc.not_after if exc.reason == "expired" else exc.not_before
    translation = (_NOT_VALID[exc.reason], {"date": when})
    return Problem(
        422, "certificate_not_valid", exc.detail, translation=translation, reason=exc.reason
    )


def _not_found(exc: KeyNotFound) -> Problem:
    if exc.key_id is None:
        return Problem(404, "not_found", N_("no key named and no default key is configured"))
    return Problem(
        404,
        "not_found",
        N_("no key {key!r} (see GET /v1/keys)"),
        params={"key": exc.key_id},
        key=exc.key_id,
    )


# The families' answers: for every error no more specific entry names.


def _bad_input(exc: BadInput) -> Problem:
    return Problem(400, "bad_request", _detail(exc))


def _refused(exc: Refused) -> Problem:
    return Problem(422, "refused", _detail(exc))


def _missing(exc: NotFound) -> Problem:
    return Problem(404, "not_found", _detail(exc))


def _key_unavailable(exc: KeyUnavailable) -> Problem:
    return Problem(423, "key_locked", _detail(exc))


def _upstream_failed(exc: UpstreamError) -> Problem:
    return Problem(502, "upstream_error", _detail(exc))


def _upstream_slow(exc: UpstreamSlow) -> Problem:
    return Problem(504, "upstream_timeout", _detail(exc))


def _upstream_unavailable(exc: UpstreamUnavailable) -> Problem:
    headers = _retry_after(exc, UPSTREAM_RETRY_AFTER)
    return Problem(503, "upstream_unavailable", _detail(exc), headers=headers)


def _storage_problem(exc: StorageError) -> Problem:
    return Problem(
        503,
        "storage_unavailable",
        f"{exc}: nothing was accepted or changed; try again later",
        headers=_retry_after(exc, STORAGE_RETRY_AFTER),
    )


def _busy(exc: Busy) -> Problem:
    return Problem(503, "workers_busy", _detail(exc), headers=_retry_after(exc, BUSY_RETRY_AFTER))


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


def _not_qualified(exc: NotQualified) -> Problem:
    """``[trust.lists] at_signing = 'refuse'``: what the signature would have passed as."""
    verdict = exc.verdict
    return Problem(
        422,
        "not_qualified",
        "; ".join(verdict.problems) + " ([trust.lists] at_signing = 'refuse')",
        headers={QUALIFICATION_HEADER: verdict.header()},
    )


def _unknown_profile(exc: UnknownProfile) -> Problem:
    return Problem(404, "not_found", str(exc), profile=exc.name)


def _invalid_level(exc: InvalidLevel) -> Problem:
    return bad_parameter("level", str(exc))


#: Each error type below the API and its answer; ``None``: a failure of sidecar
#: itself, which the caller logs with its traceback and answers 500 ``internal_error``
#: naming the request id (the detail must not leak what went wrong). Looked up by
#: :func:`problem_for`, most specific class first; every family of
#: :mod:`sidecar.errors` is here (``tests/test_errors.py`` checks it).
PROBLEMS: dict[type[SidecarError], Mapper | None] = {
    # The engines' own errors, answered with what they carry.
    XmlInputError: xml_problem,
    UpstreamFailure: upstream_problem,
    TsaError: tsa_problem,
    PdfRefused: pdf_refused,
    PadesError: pades_problem,
    CertificateUnusable: _unusable,
    SchemaViolation: _schema_violation,
    FormError: _form_error,
    KeyLocked: _locked,
    CertificateNotValid: _not_valid,
    KeyNotFound: _not_found,
    KeyNotAllowed: _key_not_allowed,
    NotQualified: _not_qualified,
    UnknownProfile: _unknown_profile,
    InvalidLevel: _invalid_level,
    # The families.
    BadInput: _bad_input,
    Refused: _refused,
    NotFound: _missing,
    KeyUnavailable: _key_unavailable,
    UpstreamError: _upstream_failed,
    UpstreamFailed: _upstream_failed,
    UpstreamSlow: _upstream_slow,
    UpstreamUnavailable: _upstream_unavailable,
    StorageError: _storage_problem,
    Busy: _busy,
    Misconfigured: None,
    InternalError: None,
    SidecarError: None,
}


def problem_for(exc: BaseException) -> Problem | None:
    """The problem for an error raised below the API: the entry of :data:`PROBLEMS` for
    the first of its classes (most specific first) that the table names. ``None``: an
    internal failure, or not one of sidecar's errors: the caller answers 500."""
    for cls in type(exc).__mro__:
        if cls in PROBLEMS:
            mapper = PROBLEMS[cls]
            return None if mapper is None else mapper(exc)
    return None
