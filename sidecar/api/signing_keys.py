"""``GET /v1/keys`` and how key errors are answered."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..i18n import N_
from ..keys import CertificateNotValid, KeyLocked, KeyNotFound
from ..operations.key_info import describe_keys
from .appkeys import SERVICES
from .problems import Problem, register_problem_mapper

__all__ = ["HANDLERS", "list_keys"]


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


register_problem_mapper(KeyLocked, _locked)
register_problem_mapper(CertificateNotValid, _not_valid)
register_problem_mapper(KeyNotFound, _not_found)


async def list_keys(request: web.Request) -> web.Response:
    return web.json_response({"keys": describe_keys(request.app[SERVICES])})


HANDLERS = {"listKeys": list_keys}
