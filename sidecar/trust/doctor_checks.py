"""``sidecar doctor``'s trusted-list checks: each list's age and state, the signers'
qualification, and each TSA's (from a real timestamp, its TSA chain judged against
the lists at its genTime).

Found by :data:`sidecar.doctor.PLUGIN_MODULES`. Runs with ``[trust.lists] enabled``,
or with ``--sandbox`` on the sandbox's own lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from urllib.parse import urlsplit

from asn1crypto import x509

from ..doctor import DoctorContext, Finding, Status
from ..doctor.probes import ProbeError, timestamp_probe
from .anchors import TrustAnchors, load_certificates
from .lists import TrustedLists, chain_of, qualify_signer, qualify_timestamp
from .lists.service import ListService
from .lists.signing import QUALIFIED_CERTIFICATES
from .lists.source import ListPolicy
from .service import load_anchors

__all__ = ["DOCTOR_CHECKS", "check_trusted_lists"]

_REFRESH = "run 'sidecar trust refresh' (the daemon also refreshes them daily)"


def _list_findings(lists: TrustedLists, now: datetime) -> list[Finding]:
    findings: list[Finding] = []
    for info in lists.lists:
        data = info.as_json(now)
        hours = data["age_seconds"] // 3600
        next_update = f"{info.next_update:%Y-%m-%d}" if info.next_update else "none given"
        summary = f"sequence {info.sequence}, fetched {hours} h ago, next update {next_update}"
        if info.state == "current":
            findings.append(Finding(f"trusted-list:{info.key}", "ok", summary, data=data))
        else:
            status: Status = "warn" if info.state == "stale" else "fail"
            findings.append(
                Finding(f"trusted-list:{info.key}", status, info.problem or summary, _REFRESH, data)
            )
    listed = {i.key for i in lists.lists}
    for problem in lists.problems:
        if not any(f"trusted list {key}:" in problem for key in listed):
            findings.append(Finding("trusted-lists", "fail", problem, _REFRESH))
    return findings


def _signer_finding(
    key_id: str, chain: Sequence[x509.Certificate], lists: TrustedLists, now: datetime
) -> Finding:
    verdict = qualify_signer(lists, chain, now)
    data = verdict.as_json()
    if verdict.qualification in QUALIFIED_CERTIFICATES:
        qscd = ", key in a QSCD" if verdict.qscd else ""
        return Finding(
            f"qualification:key:{key_id}",
            "ok",
            f"{verdict.qualification} (CA/QC service {verdict.service!r}{qscd})",
            data=data,
        )
    return Finding(
        f"qualification:key:{key_id}",
        "warn",
        f"{verdict.qualification}: the certificate does not chain to a CA/QC service granted "
        "on the trusted lists; its signatures will not pass as qualified",
        "use a qualified certificate (LuxTrust) for this key",
        data,
    )


async def _signer_chains(ctx: DoctorContext) -> dict[str, list[x509.Certificate]]:
    pki = ctx.sandbox_pki() if ctx.sandbox else None
    if pki is not None:
        return {
            sid: [*load_certificates(s.cert_pem), *load_certificates(s.chain_pem)]
            for sid, s in pki.signers.items()
        }
    configs = getattr(ctx.settings, "keys", None)
    if not configs:
        return {}
    from ..keys import KeyRegistry

    registry = KeyRegistry.from_configs(configs)
    chains: dict[str, list[x509.Certificate]] = {}
    try:
        await registry.open()
        for info in registry.describe():
            if info.unlocked:
                signer = registry.get(info.id)
                chains[info.id] = [signer.certificate, *signer.chain]
    except Exception:  # the keys check says what is wrong with them
        return chains
    finally:
        await registry.close()
    return chains


async def check_trusted_lists(ctx: DoctorContext) -> list[Finding]:
    settings = ctx.settings
    if settings is None:
        return []
    pki = ctx.sandbox_pki() if ctx.sandbox else None
    policy: ListPolicy | None = None
    if pki is not None:
        from ..sandbox.lists import ensure_sandbox_lists, sandbox_list_policy

        policy = sandbox_list_policy(ensure_sandbox_lists(pki))
    elif not settings.trust.lists.enabled:
        return [
            Finding(
                "trusted-lists",
                "skip",
                "the EU trusted lists are not in use ([trust.lists] enabled = false): "
                "nothing says whether signatures and timestamps will pass as qualified",
            )
        ]
    service = ListService(settings.trust.lists, ctx.paths.data_dir, policy=policy, clock=ctx.clock)
    lists = await service.load()
    now = ctx.now()
    findings = _list_findings(lists, now)
    if not lists.usable:
        return findings
    anchors = list(load_anchors(settings.trust).certificates)
    if pki is not None:
        anchors += load_certificates(pki.roots_pem)
    anchors += [*lists.ca_certificates(now), *lists.tsa_certificates(now)]
    trusted = TrustAnchors.of(anchors)
    for key_id, chain in (await _signer_chains(ctx)).items():
        findings.append(
            _signer_finding(key_id, chain_of(chain[0], [*chain[1:], *anchors]), lists, now)
        )
    urls = [t.url for t in settings.trust.tsa if not (t.username or t.client_cert)]
    if not settings.trust.tsa and pki is not None:
        urls = [pki.tsa_url]
    for url in urls:
        check = f"qualification:tsa:{urlsplit(url).hostname or url}"
        try:
            # A real timestamp, accepted by the daemon's own check; its chain is judged.
            probe = await timestamp_probe(
                ctx.session, url, anchors=trusted, local_now=now, seconds=ctx.timeout
            )
        except ProbeError as exc:
            findings.append(
                Finding(
                    check,
                    "skip",
                    f"no timestamp to judge ({exc.kind}); see the tsa check",
                )
            )
            continue
        gen_time, chain = probe.gen_time, list(probe.token.chain)
        stamp = qualify_timestamp(lists, chain_of(chain[0], [*chain[1:], *anchors]), gen_time)
        if stamp.qualified:
            findings.append(
                Finding(check, "ok", f"a granted QTST ({stamp.service!r})", data={"url": url})
            )
        else:
            findings.append(
                Finding(
                    check,
                    "warn",
                    f"{url} is not a granted QTST on the trusted lists: its timestamps are "
                    "not qualified",
                    "use the TSA the CNS designates (INCERT's qualified TSA) in [[trust.tsa]]",
                    {"url": url},
                )
            )
    return findings


DOCTOR_CHECKS = [("trusted-lists", check_trusted_lists)]
