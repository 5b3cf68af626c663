"""The XAdES signer parses the caller's document once, whatever the key backend, and
signs it as before (the full checks are in test_xades_sign.py)."""

from __future__ import annotations

import pytest

from sidecar.keys import Signer
from sidecar.signing import xades as xades_module
from sidecar.signing.report import Indication, Level
from sidecar.signing.trust_binding import TrustTimestampSource, TrustValidationDataSource
from sidecar.signing.xades import sign_xml
from sidecar.signing.xades_verify import VerificationPolicy, verify_xml
from sidecar.signing.xml_safety import ParsedXml
from sidecar.trust import TrustServices
from tests.fixtures.xades import FORM


@pytest.mark.parametrize(
    ("kind", "level", "parses"),
    [
        # Both backends: the signing itself runs in an executor (see below).
        ("pkcs12-rsa", Level.B_B, 1),
        ("pkcs12-rsa", Level.B_LT, 1),
        ("pkcs11-ec", Level.B_LT, 1),
        # B-LTA parses its own output back once, for the archive timestamp's input.
        ("pkcs12-ec", Level.B_LTA, 2),
    ],
)
async def test_the_input_is_parsed_once(
    kind: str,
    level: Level,
    parses: int,
    xades_signers: dict[str, Signer],
    xades_trust: TrustServices,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsed: list[bytes] = []
    real = xades_module.parse_xml

    def counting(data: bytes, **kwargs: int) -> ParsedXml:
        parsed.append(data)
        return real(data, **kwargs)

    monkeypatch.setattr(xades_module, "parse_xml", counting)
    document = await sign_xml(
        FORM,
        xades_signers[kind],
        level,
        timestamps=TrustTimestampSource(xades_trust.tsa),
        validation_data=TrustValidationDataSource(xades_trust.revocation),
    )
    monkeypatch.undo()
    assert len(parsed) == parses
    assert parsed[0] == FORM

    start = document.index(b"<ds:Signature")
    end = document.index(b"</ds:Signature>") + len(b"</ds:Signature>")
    assert document[:start] + document[end:] == FORM
    (report,) = await verify_xml(
        document, VerificationPolicy(trust_roots=xades_trust.anchors.certificates)
    )
    assert report.level == level, report
    if level != Level.B_B:
        assert report.indication == Indication.TOTAL_PASSED, report


@pytest.mark.parametrize("kind", ["pkcs12-rsa", "pkcs11-ec"])
async def test_signing_never_runs_on_the_event_loop(
    kind: str,
    xades_signers: dict[str, Signer],
    xades_trust: TrustServices,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 3: signing never blocks the event loop, whatever the key or document size."""
    import threading

    signer = xades_signers[kind]
    threads: list[int] = []
    real = signer.sign_blocking

    def recording(data: bytes, **kwargs: object) -> bytes:
        threads.append(threading.get_ident())
        return real(data, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(signer, "sign_blocking", recording)
    await sign_xml(
        FORM,
        signer,
        Level.B_LT,
        timestamps=TrustTimestampSource(xades_trust.tsa),
        validation_data=TrustValidationDataSource(xades_trust.revocation),
    )
    assert threads, "the key was never asked to sign"
    assert threading.get_ident() not in threads
