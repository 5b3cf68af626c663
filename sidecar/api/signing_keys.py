"""``GET /v1/keys``, the key registry's lifecycle, and how key errors are answered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from ..health import CheckResult, Status
from ..keys import (
    KeyConfig,
    KeyConfigError,
    KeyInfo,
    KeyRegistry,
)
from ..keys.access import key_visible as visible
from ..sandbox.keys import sandbox_key_configs
from .keys import HEALTH_CHECKS, SANDBOX_PKI, SETTINGS

__all__ = ["HANDLERS", "KEY_REGISTRY", "key_info_json", "keys_context"]

log = logging.getLogger("sidecar.keys")

KEY_REGISTRY = web.AppKey("key_registry", KeyRegistry)
#: Certificates closer than this to expiry make the key check ``degraded``.
EXPIRY_WARNING_DAYS = 30


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
