"""Augmenting an existing XAdES signature (offline mode: signed B-B, timestamped later).

The augmented signature must verify at the new level with our verifier and xmlsec1,
and the document must be the original bytes plus the new unsigned properties, and
nothing else: what was signed is not touched.
"""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest

from sidecar.config import TrustSettings, TsaSettings
from sidecar.keys import Signer
from sidecar.sandbox import SandboxPKI
from sidecar.signing.report import Indication, Level, SubIndication
from sidecar.signing.sources import UpstreamFailure
from sidecar.signing.trust_binding import TrustTimestampSource, TrustValidationDataSource
from sidecar.signing.xades import augment_xml, sign_xml
from sidecar.signing.xades_verify import VerificationPolicy, verify_xml
from sidecar.signing.xml_safety import XmlInputError
from sidecar.trust import TrustServices, open_trust
from tests.fixtures.sandbox import free_port
from tests.fixtures.xades import FORM, SignXml, xmlsec1_verify

#: What augmentation may insert: one UnsignedProperties (into QualifyingProperties),
#: or further properties at the end of an UnsignedSignatureProperties.
UNSIGNED = re.compile(rb"<xades:UnsignedProperties.*?</xades:UnsignedProperties>", re.S)


def sources(trust: TrustServices) -> dict:
    return {
        "timestamps": TrustTimestampSource(trust.tsa),
        "validation_data": TrustValidationDataSource(trust.revocation),
    }


async def check(document: bytes, trust: TrustServices, level: Level) -> None:
    (report,) = await verify_xml(document, VerificationPolicy(trust.anchors.certificates))
    assert report.indication == Indication.TOTAL_PASSED, report
    assert report.level == level, report


@pytest.mark.parametrize("kind", ["pkcs12-rsa", "pkcs11-ec"])
async def test_b_b_to_b_lt_keeps_every_signed_byte(
    kind: str, signed_xml: SignXml, xades_trust: TrustServices, sandbox_services: SandboxPKI
) -> None:
    b_b = await signed_xml(kind, Level.B_B)
    b_lt = await augment_xml(b_b, Level.B_LT, **sources(xades_trust))
    await check(b_lt, xades_trust, Level.B_LT)
    inserted = UNSIGNED.findall(b_lt)
    assert len(inserted) == 1 and b"SignatureTimeStamp" in inserted[0]
    assert b"CertificateValues" in inserted[0] and b"RevocationValues" in inserted[0]
    # Remove the insertion: the B-B document, byte for byte (ISO-8859-1, CRLF, CDATA...).
    assert b_lt.replace(inserted[0], b"") == b_b
    assert xmlsec1_verify(b_lt, sandbox_services.roots_pem).returncode == 0


async def test_step_by_step_b_t_then_b_lt_then_b_lta(
    signed_xml: SignXml, xades_trust: TrustServices
) -> None:
    b_b = await signed_xml("pkcs12-rsa", Level.B_B)
    b_t = await augment_xml(b_b, Level.B_T, timestamps=TrustTimestampSource(xades_trust.tsa))
    # Offline, a B-T is undecided (no revocation data yet); its timestamp is there.
    (report,) = await verify_xml(b_t, VerificationPolicy(xades_trust.anchors.certificates))
    assert report.level == Level.B_T and report.timestamp_time is not None
    assert report.sub_indication == SubIndication.TRY_LATER
    # B-T → B-LT appends into the existing UnsignedSignatureProperties.
    b_lt = await augment_xml(b_t, Level.B_LT, **sources(xades_trust))
    await check(b_lt, xades_trust, Level.B_LT)
    end = b_t.index(b"</xades:UnsignedSignatureProperties>")
    assert b_lt.startswith(b_t[:end]) and b_lt.endswith(b_t[end:])
    b_lta = await augment_xml(b_lt, Level.B_LTA, **sources(xades_trust))
    await check(b_lta, xades_trust, Level.B_LTA)
    # Already there: nothing is bought, nothing changes.
    assert await augment_xml(b_lta, Level.B_LT, **sources(xades_trust)) == b_lta


async def test_b_b_straight_to_b_lta(signed_xml: SignXml, xades_trust: TrustServices) -> None:
    b_b = await signed_xml("pkcs12-ec", Level.B_B)
    await check(
        await augment_xml(b_b, Level.B_LTA, **sources(xades_trust)), xades_trust, Level.B_LTA
    )


async def test_tsa_down_changes_nothing_and_says_so(
    xades_signers: dict[str, Signer],
    xades_trust: TrustServices,
    sandbox_services: SandboxPKI,
    tmp_path: Path,
) -> None:
    b_b = await sign_xml(FORM, xades_signers["pkcs12-rsa"], Level.B_B)
    dead_url = f"http://127.0.0.1:{free_port()}/tsa"  # a closed port
    async with (
        aiohttp.ClientSession() as session,
        open_trust(
            TrustSettings(bundled_anchors=False, tsa=(TsaSettings(url=dead_url, attempts=1),)),
            session=session,
            data_dir=tmp_path,
            extra_anchor_files=[sandbox_services.roots_pem],
        ) as dead,
    ):
        with pytest.raises(UpstreamFailure) as caught:
            await augment_xml(
                b_b,
                Level.B_LT,
                timestamps=TrustTimestampSource(dead.tsa),
                validation_data=TrustValidationDataSource(xades_trust.revocation),
            )
    assert caught.value.service == "tsa" and caught.value.kind == "unavailable"


async def test_refusals(signed_xml: SignXml, xades_trust: TrustServices) -> None:
    with pytest.raises(XmlInputError, match="0 ds:Signature"):
        await augment_xml(FORM, Level.B_LT, **sources(xades_trust))
    with pytest.raises(ValueError, match="B-T, B-LT or B-LTA"):
        await augment_xml(
            await signed_xml("pkcs12-rsa", Level.B_B), Level.B_B, **sources(xades_trust)
        )
    # A plain XMLDSig signature has no XAdES properties to extend.
    plain = re.sub(
        rb"<ds:Object.*</ds:Object>", b"", await signed_xml("pkcs12-rsa", Level.B_B), flags=re.S
    )
    with pytest.raises(XmlInputError, match="not a XAdES signature"):
        await augment_xml(plain, Level.B_LT, **sources(xades_trust))
