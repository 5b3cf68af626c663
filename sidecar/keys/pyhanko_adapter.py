"""Let pyHanko sign (PAdES, CMS) with any :class:`~sidecar.keys.signer.Signer`."""

from __future__ import annotations

from asn1crypto import algos
from pyhanko.sign.signers.pdf_cms import Signer as PyHankoSigner
from pyhanko_certvalidator.registry import SimpleCertificateStore

from .algorithms import hash_algorithm
from .errors import UnsupportedAlgorithm
from .signer import Signer

__all__ = ["PyHankoSignerAdapter"]


class PyHankoSignerAdapter(PyHankoSigner):
    """A pyHanko signer backed by a sidecar :class:`Signer`.

    With ``prefer_pss`` the RSASSA-PSS parameters are fixed to what tokens
    implement and ETSI profiles expect: MGF1 with the message digest and a
    salt as long as the digest (pyHanko's own default is the longest salt).
    """

    def __init__(self, signer: Signer, *, prefer_pss: bool = False, embed_roots: bool = True):
        self._sidecar_signer = signer
        super().__init__(
            prefer_pss=prefer_pss,
            embed_roots=embed_roots,
            signing_cert=signer.certificate,
            cert_registry=SimpleCertificateStore.from_certs(signer.chain),
        )

    def get_signature_mechanism_for_digest(
        self, digest_algorithm: str | None
    ) -> algos.SignedDigestAlgorithm:
        if self.prefer_pss and self._sidecar_signer.key_type.startswith("rsa"):
            if digest_algorithm is None:
                raise ValueError("RSASSA-PSS needs a digest algorithm")
            size = hash_algorithm(digest_algorithm).digest_size
            return algos.SignedDigestAlgorithm(
                {
                    "algorithm": "rsassa_pss",
                    "parameters": algos.RSASSAPSSParams(
                        {
                            "hash_algorithm": {"algorithm": digest_algorithm},
                            "mask_gen_algorithm": {
                                "algorithm": "mgf1",
                                "parameters": {"algorithm": digest_algorithm},
                            },
                            "salt_length": size,
                        }
                    ),
                }
            )
        return super().get_signature_mechanism_for_digest(digest_algorithm)

    async def async_sign_raw(
        self, data: bytes, digest_algorithm: str, dry_run: bool = False
    ) -> bytes:
        mechanism = self.get_signature_mechanism_for_digest(digest_algorithm)
        pss = mechanism.signature_algo == "rsassa_pss"
        if pss:
            params = mechanism["parameters"]
            if (
                params["hash_algorithm"]["algorithm"].native != digest_algorithm
                or params["salt_length"].native != hash_algorithm(digest_algorithm).digest_size
            ):
                raise UnsupportedAlgorithm("only PSS with the message digest and salt length")
        if dry_run:
            return bytes(self._placeholder_size())
        return await self._sidecar_signer.sign(data, digest=digest_algorithm, pss=pss)

    def _placeholder_size(self) -> int:
        public_key = self._sidecar_signer.certificate.public_key
        if public_key.algorithm == "rsa":
            return (public_key.bit_size + 7) // 8
        # DER ECDSA-Sig-Value at its longest: two INTEGERs with a sign byte each.
        coordinate = (public_key.bit_size + 7) // 8
        return 2 * (coordinate + 3) + 3
