"""The trusted-lists verdict at signing is reused while nothing it depends on changed.

The signing routes judge twice per signature on the event loop; a verdict "now" is
given again for the same lists object, the same certificates (by DER) and policy, for
a few seconds, and judged anew when any of them changes (a refresh makes new lists).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from asn1crypto import pem, x509

from sidecar.keys import Signer
from sidecar.operations.qualification import _CHAINS
from sidecar.sandbox import SandboxPKI
from sidecar.trust import TrustAnchors
from sidecar.trust.lists.signing import judge_signing
from sidecar.trust.lists.source import TrustedLists


def certificates(path: Path) -> list[x509.Certificate]:
    data = path.read_bytes()
    return [x509.Certificate.load(der) for _, _, der in pem.unarmor(data, multiple=True)]


def test_verdict_is_reused_until_its_inputs_change(sandbox_pki: SandboxPKI) -> None:
    chain = certificates(sandbox_pki.signers["sandbox-rsa"].chain_pem)
    tsa = certificates(sandbox_pki.tsa_cert_pem)
    lists = TrustedLists()
    first = judge_signing(lists, chain, {"http://tsa": tsa})
    # Equal certificates in new objects (as each new token brings): the same verdict.
    again = [x509.Certificate.load(c.dump()) for c in chain]
    assert judge_signing(lists, again, {"http://tsa": list(tsa)}) is first
    # Refreshed lists (a new object), another policy, another TSA chain: judged anew.
    assert judge_signing(TrustedLists(), chain, {"http://tsa": tsa}) is not first
    assert judge_signing(lists, chain, {"http://tsa": tsa}, "refuse") is not first
    assert judge_signing(lists, chain, {"http://tsa": None}) is not first
    # An explicit moment is always judged.
    now = datetime.now(UTC)
    assert judge_signing(lists, chain, {"http://tsa": tsa}, now=now) is not first


def test_signer_chain_is_found_once_per_anchor_set(
    sandbox_pki: SandboxPKI, xades_signers: dict[str, Signer]
) -> None:
    """The signer's chain (judged twice per signature) is found once for its
    certificates and anchor set, and found anew when the anchors change."""
    signer = xades_signers["pkcs12-rsa"]
    roots = TrustAnchors.of(certificates(sandbox_pki.roots_pem))
    first = _CHAINS.of(signer, roots)
    assert first[0].dump() == signer.certificate.dump()
    assert first[-1].dump() in {c.dump() for c in roots.certificates}
    assert _CHAINS.of(signer, roots) is first
    # Other anchors (the trusted lists changed): found again, against those (the
    # PKCS#12 file carries the whole chain: the same certificates again).
    none = TrustAnchors.of([])
    other = _CHAINS.of(signer, none)
    assert other is not first
    assert [c.dump() for c in other] == [c.dump() for c in first]
    assert _CHAINS.of(signer, none) is other
