"""Doctor checks for the configured keys and TSAs, on the subsystems' public APIs.

Written by the doctor's author against :mod:`sidecar.keys` (``KeyRegistry``,
``KeyInfo``) and the ``[[trust.tsa]]`` settings as they stood; when a subsystem
ships its own ``sidecar/<area>/doctor_checks.py`` (see :data:`sidecar.doctor.PLUGIN_MODULES`),
drop the matching check here. Each check yields nothing when its settings section
does not exist, so it never breaks an older configuration.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from ..i18n import N_, _, format_date, ngettext
from .findings import DoctorContext, Finding
from .probes import (
    EXPIRY_FAIL_DAYS,
    EXPIRY_WARN_DAYS,
    ProbeError,
    anchors_for,
    clock_skew_finding,
    timestamp_probe,
)

__all__ = ["DOCTOR_CHECKS", "check_keys", "check_tsas"]

_LOCKED_FIX = {
    "pin_missing": N_("store the PIN in the OS secret store (sidecar keys ...), or set pin_source"),
    "pin_incorrect": N_("the stored PIN is wrong: store the right one before the token locks"),
    "pin_locked": N_("the token's PIN is locked: unblock it with the PUK (card issuer's tool)"),
    "token_absent": N_("insert the smartcard/token (and check pcscd is running)"),
    "passphrase_missing": N_("store the PKCS#12 passphrase in the OS secret store"),
    "passphrase_incorrect": N_("the stored PKCS#12 passphrase is wrong: store the right one"),
}


def _days_finding(check: str, not_after: datetime | None, now: datetime) -> Finding | None:
    if not_after is None:
        return None
    days = (not_after - now).total_seconds() / 86400
    data = {"not_after": not_after.isoformat(), "days_left": int(days)}
    said = {"what": _("certificate"), "date": format_date(not_after)}
    if days < 0:
        return Finding(
            check,
            "fail",
            _("{what} expired on {date}", **said),
            _("renew the certificate and configure the new one"),
            data,
        )
    if days <= EXPIRY_WARN_DAYS:
        shown = int(days) + (1 if days % 1 else 0)
        return Finding(
            check,
            "fail" if days <= EXPIRY_FAIL_DAYS else "warn",
            ngettext(
                "{what} expires in {n} day ({date})",
                "{what} expires in {n} days ({date})",
                shown,
                **said,
            ),
            _("order the renewal of the certificate now"),
            data,
        )
    return None


async def check_keys(ctx: DoctorContext) -> Iterable[Finding]:
    configs = getattr(ctx.settings, "keys", None)
    if not configs:
        return []
    from ..keys import KeyRegistry

    registry = KeyRegistry.from_configs(configs)
    findings: list[Finding] = []
    try:
        await registry.open()
    except Exception as exc:  # KeyConfigError and the like: say which, not how
        return [
            Finding(
                "keys",
                "fail",
                _("the keys cannot be opened: {reason}", reason=exc),
                _("correct the [[keys]] section"),
            )
        ]
    try:
        infos: list[Any] = registry.describe()
    finally:
        await registry.close()
    now = ctx.now()
    for info in infos:
        check = f"key:{info.id}"
        if not info.unlocked:
            reason = info.locked_reason or "locked"
            locked = (
                _("key is locked: {reason} ({detail})", reason=reason, detail=info.locked_detail)
                if info.locked_detail
                else _("key is locked: {reason}", reason=reason)
            )
            findings.append(
                Finding(
                    check,
                    "fail",
                    locked,
                    _(_LOCKED_FIX.get(reason, N_("unlock the key (PIN, passphrase, token)"))),
                    {"reason": reason},
                )
            )
        expiry = _days_finding(check + ":certificate", info.not_after, now)
        if expiry is not None:
            findings.append(expiry)
        if info.unlocked and expiry is None:
            ready = _("present and unlocked ({subject})", subject=info.subject)
            findings.append(Finding(check, "ok", ready))
    return findings


async def check_tsas(ctx: DoctorContext) -> Iterable[Finding]:
    trust = getattr(ctx.settings, "trust", None)
    tsas = getattr(trust, "tsa", ()) if trust is not None else ()
    if not tsas:
        return []
    # The daemon's anchors: a TSA found fine here gives tokens the daemon accepts.
    anchors = await anchors_for(ctx)
    findings: list[Finding] = []
    for tsa in tsas:
        host = urlsplit(tsa.url).hostname or tsa.url
        check = f"tsa:{host}"
        if tsa.username or tsa.client_cert:
            findings.append(
                Finding(
                    check,
                    "skip",
                    _(
                        "authenticated TSA: checked by the daemon "
                        "(GET /v1/health with an admin token)"
                    ),
                )
            )
            continue
        try:
            probe = await timestamp_probe(
                ctx.session,
                tsa.url,
                anchors=anchors,
                local_now=ctx.now(),
                seconds=min(ctx.timeout, tsa.timeout),
                policy=tsa.policy,
            )
        except ProbeError as exc:
            findings.append(
                Finding(
                    check,
                    "fail",
                    exc.said("TSA"),
                    _(
                        "the daemon refuses this TSA's timestamps too: put its root CA "
                        "in [trust] anchors, or use another TSA in [[trust.tsa]]"
                    )
                    if exc.kind == "error"
                    else _(
                        "check the network path (proxy, firewall) to the TSA, "
                        "or the URL in [[trust.tsa]]"
                    ),
                    {"url": tsa.url},
                )
            )
            continue
        findings.append(
            Finding(
                check,
                "ok",
                _("timestamp granted in {ms} ms", ms=round(probe.round_trip_seconds * 1000)),
                data={"url": tsa.url},
            )
        )
        tolerance = float(getattr(trust, "clock_skew", 120.0))
        findings.append(
            clock_skew_finding(f"clock:{host}", probe.skew_seconds, tolerance=tolerance)
        )
    return findings


DOCTOR_CHECKS = [("keys", check_keys), ("tsa", check_tsas)]
