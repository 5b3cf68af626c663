"""Real XML-signature documents we did not make, through the daemon's routes.

``tests/corpus/xml/`` holds the public test data of two other projects (see its
SOURCES.md): signxml's interoperability and XAdES samples (among them EU DSS and
member-state plugtest signatures) and xmlsec's XMLDSig suites. Each file is verified
and signed through the HTTP API, as a practice would send it: no answer may be a 5xx,
every refusal is problem+json with a stable code, and every signature we add to one
of them is reported intact by our own verification.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from sidecar.config import SandboxSettings, Settings, SigningSettings
from sidecar.sandbox import SandboxPKI
from tests.fixtures.daemon import Api

CORPUS = Path(__file__).resolve().parent / "corpus" / "xml"
FILES = sorted(p for p in CORPUS.rglob("*.xml") if p.is_file())
XML = {"Content-Type": "application/xml"}
#: The codes a refusal of one of these documents may carry (each is documented).
REFUSALS = {
    "malformed_xml",
    "forbidden_dtd",
    "xml_limits",
    "unsupported_xml",
    "already_signed",
    "signature_placement",
}


def test_the_corpus_is_there() -> None:
    assert len(FILES) >= 300
    assert (CORPUS / "SOURCES.md").is_file()


async def test_every_document_verifies_or_is_refused_clearly(sandbox_api: Api) -> None:
    outcomes: Counter[str] = Counter()
    for path in FILES:
        response = await sandbox_api.client.post(
            "/v1/verify", data=path.read_bytes(), headers={**sandbox_api.auth("verifier"), **XML}
        )
        name = str(path.relative_to(CORPUS))
        assert response.status < 500, (name, await response.text())
        if response.status == 200:
            report = await response.json()
            for signature in report["signatures"]:
                assert signature["indication"] in {"TOTAL_PASSED", "INDETERMINATE", "TOTAL_FAILED"}
                outcomes[signature["indication"]] += 1
        else:
            assert response.content_type == "application/problem+json", name
            code = (await response.json())["code"]
            assert code in REFUSALS, (name, code)
            outcomes[code] += 1
    print(dict(outcomes))
    assert outcomes["TOTAL_PASSED"] + outcomes["INDETERMINATE"] > 0


@pytest.fixture
async def parallel_api(
    api_factory: Callable[..., Awaitable[Api]], sandbox_services: SandboxPKI
) -> Api:
    """The sandbox daemon configured to add a signature beside existing ones, as a
    practice countersigning a received document would."""
    settings = Settings(
        sandbox=SandboxSettings(softhsm=False), signing=SigningSettings(xml_allow_parallel=True)
    )
    return await api_factory(settings, sandbox_pki=sandbox_services)


async def test_every_document_can_be_signed_or_is_refused_clearly(parallel_api: Api) -> None:
    sandbox_api = parallel_api
    signed = 0
    refused: Counter[str] = Counter()
    for path in FILES:
        name = str(path.relative_to(CORPUS))
        response = await sandbox_api.client.post(
            "/v1/xml/sign?level=B-B",
            data=path.read_bytes(),
            headers={**sandbox_api.auth("signer"), **XML},
        )
        assert response.status < 500, (name, await response.text())
        if response.status != 200:
            assert response.content_type == "application/problem+json", name
            code = (await response.json())["code"]
            assert code in REFUSALS, name
            refused[code] += 1
            continue
        signed += 1
        check = await sandbox_api.client.post(
            "/v1/verify",
            data=await response.read(),
            headers={**sandbox_api.auth("verifier"), **XML},
        )
        assert check.status == 200, (name, await check.text())
        ours = [
            s for s in (await check.json())["signatures"] if "Sandbox" in (s.get("signer") or "")
        ]
        assert ours and all(s["indication"] != "TOTAL_FAILED" for s in ours), (name, ours)
    print({"signed": signed, **refused})
    # Most of the corpus is already signed with signatures over the whole document
    # (no parallel-signature filter): adding one would break them, so already_signed.
    assert signed >= 30
    assert refused["already_signed"] >= 200


@pytest.fixture(autouse=True)
def _corpus_present() -> None:
    if not FILES:
        pytest.fail("tests/corpus/xml is empty")


#: Verdicts on named corpus files, each for a reason the report must get right. The
#: roots of these signers are not ours, so "intact" reads INDETERMINATE with a chain
#: or TSA sub-indication; TOTAL_FAILED only where something is proven wrong.
KNOWN = {
    # A trusted-list signature: the parallel XPath filter with its own prefix (dsig:).
    "signxml/xades/TEST_S1a_C1a_InTL_VALID.xml": ("INDETERMINATE", "NO_CERTIFICATE_CHAIN_FOUND"),
    # C14N 1.1 transforms (the Czech plugtest sample): read, not a format failure.
    "signxml/xades/Signature-X-CZ_SEF-4.xml": ("INDETERMINATE", "SIGNED_DATA_NOT_FOUND"),
    # Enveloping: the signed data is a ds:Object of the signature itself.
    "signxml/xades/X_AT_SIT_1.xml": ("INDETERMINATE", "NO_CERTIFICATE_CHAIN_FOUND"),
    # SHA-1 throughout: intact, too weak.
    "signxml/xades/document.signed.bes.ptcc.xml": (
        "INDETERMINATE",
        "CRYPTO_CONSTRAINTS_FAILURE_NO_POE",
    ),
    # Proven wrong: the SignedProperties reference was removed.
    "signxml/xades/dss-signed-altered-signedPropsRemoved.xml": ("TOTAL_FAILED", "FORMAT_FAILURE"),
    # An algorithm not implemented here: not proven wrong.
    "signxml/xades/xades-unsupported-signature-algorithm.xml": (
        "INDETERMINATE",
        "CRYPTO_CONSTRAINTS_FAILURE",
    ),
}


@pytest.mark.parametrize("name", sorted(KNOWN))
async def test_known_verdicts(name: str, sandbox_api: Api) -> None:
    response = await sandbox_api.client.post(
        "/v1/verify",
        data=(CORPUS / name).read_bytes(),
        headers={**sandbox_api.auth("verifier"), **XML},
    )
    assert response.status == 200
    (signature, *_) = (await response.json())["signatures"]
    assert (signature["indication"], signature["sub_indication"]) == KNOWN[name], signature
