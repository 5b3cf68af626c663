"""The sandbox's signing keys, as key configurations the key layer opens."""

from __future__ import annotations

import os

from ..keys import KeyConfig
from ..keys.credentials import secret_is_generated
from ..logs import register_secret
from .pki import SandboxPKI
from .softhsm import ensure_sandbox_token

__all__ = ["sandbox_key_configs"]


def sandbox_key_configs(pki: SandboxPKI, *, softhsm: bool = True) -> list[KeyConfig]:
    """The sandbox's keys: both signers as PKCS#12, and with *softhsm* the RSA one on a
    SoftHSM2 token too, if SoftHSM2 is installed.

    Blocking (may create the SoftHSM token).
    """
    configs = []
    for signer in pki.signers.values():
        register_secret(signer.p12_passphrase)
        secret_is_generated(signer.id)
        configs.append(
            KeyConfig(
                id=signer.id,
                backend="pkcs12",
                default=signer.id == "sandbox-rsa",
                description=f"sandbox signer ({signer.key_type}), not for real signatures",
                path=signer.p12,
                passphrase_source="config",
                passphrase=signer.p12_passphrase,
            )
        )
    token = ensure_sandbox_token(pki) if softhsm else None
    if token is not None:
        os.environ.setdefault("SOFTHSM2_CONF", str(token.conf))
        register_secret(token.pin)
        secret_is_generated("sandbox-rsa-token")
        configs.append(
            KeyConfig(
                id="sandbox-rsa-token",
                backend="pkcs11",
                description="the sandbox RSA signer on a SoftHSM2 token (PKCS#11)",
                module=token.module,
                token_label=token.token_label,
                key_label=token.key_label,
                pin_source="config",
                pin=token.pin,
            )
        )
    return configs
