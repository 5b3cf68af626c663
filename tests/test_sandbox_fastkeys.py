"""The sandbox's certomancer backend: the same signatures, each key parsed once."""

from __future__ import annotations

from asn1crypto import algos
from certomancer import crypto_utils

from sidecar.sandbox import SandboxPKI, load_certomancer_config
from sidecar.sandbox.fastkeys import CachedKeysBackend


def test_cached_keys_sign_as_certomancer_does(sandbox_pki: SandboxPKI) -> None:
    load_certomancer_config(sandbox_pki)
    assert isinstance(crypto_utils.CRYPTO_BACKEND, CachedKeysBackend)
    pem = (sandbox_pki.directory / "keys" / "tsa.key.pem").read_bytes()
    ours = CachedKeysBackend()
    original = crypto_utils.PycaCryptographyBackend()
    private, public = ours.load_private_key(pem, None)
    assert ours.load_private_key(pem, None)[0] is private  # parsed once
    assert original.load_private_key(pem, None)[1].dump() == public.dump()
    for algorithm in ("sha256_rsa", "sha512_rsa"):
        sd_algo = algos.SignedDigestAlgorithm({"algorithm": algorithm})
        # PKCS#1 v1.5 is deterministic: byte for byte what certomancer itself signs.
        assert ours.generic_sign(private, b"tbs", sd_algo) == original.generic_sign(
            private, b"tbs", sd_algo
        )
