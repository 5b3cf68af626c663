"""``GET /v1/keys``, the key registry's lifecycle, and how key errors are answered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from ..health import CheckResult, Status
from ..i18n import N_
from ..keys import (
    CertificateNotValid,
    KeyConfig,
    KeyConfigError,
    KeyInfo,
    KeyLocked,
    KeyNotFound,
    KeyRegistry,
)
from ..keys.access import key_visible as visible
from ..sandbox.keys import sandbox_key_configs
from .keys import HEALTH_CHECKS, SANDBOX_PKI, SETTINGS
from .problems import Problem, register_problem_mapper

__all__ = ["HANDLERS", "KEY_REGISTRY", "key_info_json", "keys_context"]

log = logging.getLogger("sidecar.keys")

KEY_REGISTRY = web.AppKey("key_registry", KeyRegistry)
#: Certificates closer than this to expiry make the key check ``degraded``.
EXPIRY_WARNING_DAYS = 30


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


def key_info_json(info: KeyInfo) -> dict[str, Any]:
    days = None
    if info.not_after is not None:
        days = (info.not_after - datetime.now(UTC)).days
    return {
        "id": info.id,
        "backend": info.backend,
        "default": info.default,
        "description": info.description,
        "key_type": info.key_type,
        "subject": info.subject,
        "issuer": info.issuer,
        "serial": info.serial,
        "not_before": info.not_before.isoformat() if info.not_before else None,
        "not_after": info.not_after.isoformat() if info.not_after else None,
        "days_to_expiry": days,
        "certificate_status": info.certificate_status,
        "unlocked": info.unlocked,
        "locked_reason": info.locked_reason,
        "locked_detail": info.locked_detail,
        "pin_per_operation": info.pin_per_operation,
        "opened": info.opened,
    }


async def list_keys(request: web.Request) -> web.Response:
    # Only the keys this client may use (sidecar.keys.access): not other physicians'.
    infos = [i for i in request.app[KEY_REGISTRY].describe() if visible(i.id)]
    return web.json_response({"keys": [key_info_json(i) for i in infos]})


def _check(registry: KeyRegistry) -> CheckResult:
    infos = registry.describe()
    if not infos:
        return CheckResult("keys", "degraded", "no signing key is configured")
    problems = []
    worst: Status = "ok"
    for info in infos:
        if not info.opened:  # loaded on first use, and not used yet: nothing to check
            continue
        days = (info.not_after - datetime.now(UTC)).days if info.not_after else None
        # A key that takes its PIN with each operation waits for one: not a fault.
        waiting = info.pin_per_operation and info.locked_reason == "pin_missing"
        if (not info.unlocked and not waiting) or info.certificate_status != "valid":
            problems.append(f"{info.id}: {info.locked_detail or info.certificate_status}")
            worst = "degraded"
        elif days is not None and days < EXPIRY_WARNING_DAYS:
            problems.append(f"{info.id}: certificate expires in {days} days")
            worst = "degraded"
    detail = "; ".join(problems) or f"{len(infos)} key(s) unlocked"
    return CheckResult(
        "keys",
        worst,
        detail,
        data={"keys": [key_info_json(i) for i in infos]},
    )


async def keys_context(app: web.Application) -> AsyncIterator[None]:
    """Open the configured keys (or the sandbox's) for the app's lifetime."""
    configs: Sequence[KeyConfig] = app[SETTINGS].keys
    pki = app.get(SANDBOX_PKI)
    if not configs and pki is not None:
        softhsm = app[SETTINGS].sandbox.softhsm
        configs = await asyncio.get_running_loop().run_in_executor(
            None, lambda: sandbox_key_configs(pki, softhsm=softhsm)
        )
    registry = KeyRegistry.from_configs(configs)
    try:
        await registry.open()
    except KeyConfigError as exc:
        from ..config import ConfigError

        raise ConfigError(app[SETTINGS].source, "keys", exc.detail) from None
    app[KEY_REGISTRY] = registry
    for info in registry.describe():
        state = "unlocked" if info.unlocked else f"locked ({info.locked_reason})"
        log.info("key %s (%s, %s): %s", info.id, info.backend, info.key_type, state)

    async def check() -> CheckResult:
        return _check(registry)

    app[HEALTH_CHECKS].append(("keys", check))
    try:
        yield
    finally:
        await registry.close()


HANDLERS = {"listKeys": list_keys}
