"""Reading RFC 3161 TimeStampTokens (what is inside, not whether to trust it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from asn1crypto import cms, tsp, x509

from ..trust.tsa import designates

__all__ = ["TokenContents", "read_token"]


@dataclass(frozen=True)
class TokenContents:
    signed_data: cms.SignedData
    tst_info: tsp.TSTInfo
    gen_time: datetime
    #: Hash algorithm name of the message imprint (``"sha256"``...).
    imprint_algorithm: str
    imprint: bytes
    #: The certificate that signed the token, when the token carries it.
    tsa_certificate: x509.Certificate | None
    #: Every certificate the token carries.
    certificates: tuple[x509.Certificate, ...]


def read_token(token: bytes) -> TokenContents:
    """Parse a DER TimeStampToken; ``ValueError`` when it is not one."""
    try:
        info = cms.ContentInfo.load(token)
        if info["content_type"].native != "signed_data":
            raise ValueError("not a CMS SignedData")
        signed_data: cms.SignedData = info["content"]
        encap = signed_data["encap_content_info"]
        if encap["content_type"].native != "tst_info":
            raise ValueError("the SignedData does not hold a TSTInfo")
        tst_info: tsp.TSTInfo = encap["content"].parsed
        imprint = tst_info["message_imprint"]
        certificates = tuple(
            c.chosen
            for c in (signed_data["certificates"] or [])
            if isinstance(c.chosen, x509.Certificate)
        )
        (signer_info,) = signed_data["signer_infos"]
        sid = signer_info["sid"]
        tsa_certificate = next((c for c in reversed(certificates) if designates(sid, c)), None)
        return TokenContents(
            signed_data=signed_data,
            tst_info=tst_info,
            gen_time=tst_info["gen_time"].native,
            imprint_algorithm=imprint["hash_algorithm"]["algorithm"].native,
            imprint=imprint["hashed_message"].native,
            tsa_certificate=tsa_certificate,
            certificates=certificates,
        )
    except ValueError:
        raise
    except Exception as exc:  # asn1crypto raises many kinds on bad input
        raise ValueError(f"not a TimeStampToken: {exc}") from None
