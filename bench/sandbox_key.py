"""The sandbox's signing key for the benches (one definition, several benches)."""

from __future__ import annotations

from sidecar.keys import KeyConfig, Signer, create_signer
from sidecar.sandbox import SandboxPKI

__all__ = ["sandbox_rsa_signer"]


def sandbox_rsa_signer(pki: SandboxPKI) -> Signer:
    """The sandbox's RSA PKCS#12 key, opened."""
    rsa = pki.signers["sandbox-rsa"]
    signer = create_signer(
        KeyConfig(
            id="bench", backend="pkcs12", path=rsa.p12,
            passphrase_source="config", passphrase=rsa.p12_passphrase,
        )
    )  # fmt: skip
    signer.open()
    return signer
