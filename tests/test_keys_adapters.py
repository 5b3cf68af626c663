"""signxml and pyHanko sign through a sidecar Signer, and the results verify."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.writer import PdfFileWriter
from pyhanko.sign import signers
from pyhanko.sign.validation import async_validate_pdf_signature
from pyhanko_certvalidator import ValidationContext
from signxml import SignatureConstructionMethod, XMLSigner, XMLVerifier

from sidecar.keys import KeyConfig, Signer, create_signer
from sidecar.keys.pyhanko_adapter import PyHankoSignerAdapter
from sidecar.keys.signxml_adapter import SignerEcKey, SignerRsaKey, as_cryptography_key
from tests.fixtures.softhsm import MAIN_PIN, MAIN_TOKEN, P12_PASSPHRASE, KeyPki, SoftHsm

C14N_1_0 = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"


@pytest.fixture(scope="module")
def signers_by_kind(softhsm: SoftHsm, pkcs12_files: dict[str, Path]) -> Iterator[dict[str, Signer]]:
    made: dict[str, Signer] = {}
    for name in ("rsa", "ec"):
        made[f"pkcs12-{name}"] = create_signer(
            KeyConfig(
                id=f"adapt-p12-{name}",
                backend="pkcs12",
                path=pkcs12_files[name],
                passphrase_source="config",
                passphrase=P12_PASSPHRASE,
            )
        )
        made[f"pkcs11-{name}"] = create_signer(
            KeyConfig(
                id=f"adapt-p11-{name}",
                backend="pkcs11",
                module=softhsm.module,
                token_label=MAIN_TOKEN,
                key_label=name,
                pin_source="config",
                pin=MAIN_PIN,
            )
        )
    for signer in made.values():
        signer.open()
    yield made
    for signer in made.values():
        signer.close()


KINDS = ["pkcs12-rsa", "pkcs12-ec", "pkcs11-rsa", "pkcs11-ec"]


def _pem(signer: Signer) -> bytes:
    return signer.crypto_certificate.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("kind", KINDS)
def test_signxml(kind: str, signers_by_kind: dict[str, Signer]) -> None:
    signer = signers_by_kind[kind]
    key = as_cryptography_key(signer)
    assert isinstance(key, SignerEcKey if kind.endswith("ec") else SignerRsaKey)
    algorithm = "ecdsa-sha256" if kind.endswith("ec") else "rsa-sha256"
    document = etree.fromstring(b"<FeeNote><Amount>42.00</Amount></FeeNote>")
    xml_signer = XMLSigner(
        method=SignatureConstructionMethod.enveloped,
        signature_algorithm=algorithm,
        digest_algorithm="sha256",
        c14n_algorithm=C14N_1_0,
    )
    signed = xml_signer.sign(document, key=key, cert=[_pem(signer)])
    result = XMLVerifier().verify(etree.tostring(signed), x509_cert=_pem(signer))
    assert result.signed_xml is not None
    tampered = etree.tostring(signed).replace(b"42.00", b"43.00")
    with pytest.raises(Exception, match=r"(?i)digest|signature"):
        XMLVerifier().verify(tampered, x509_cert=_pem(signer))


def test_signxml_rsa_pss(signers_by_kind: dict[str, Signer]) -> None:
    signer = signers_by_kind["pkcs11-rsa"]
    xml_signer = XMLSigner(
        method=SignatureConstructionMethod.enveloped,
        signature_algorithm="sha256-rsa-MGF1",
        digest_algorithm="sha256",
        c14n_algorithm=C14N_1_0,
    )
    signed = xml_signer.sign(
        etree.fromstring(b"<a>pss</a>"), key=as_cryptography_key(signer), cert=[_pem(signer)]
    )
    XMLVerifier().verify(etree.tostring(signed), x509_cert=_pem(signer))


def _blank_pdf() -> bytes:
    writer = PdfFileWriter()
    mediabox = generic.ArrayObject([generic.NumberObject(n) for n in (0, 0, 595, 842)])
    writer.insert_page(
        generic.DictionaryObject(
            {
                generic.NameObject("/Type"): generic.NameObject("/Page"),
                generic.NameObject("/MediaBox"): mediabox,
                generic.NameObject("/Resources"): generic.DictionaryObject(),
            }
        )
    )
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.mark.parametrize(("kind", "pss"), [*((k, False) for k in KINDS), ("pkcs11-rsa", True)])
async def test_pyhanko(
    kind: str, pss: bool, signers_by_kind: dict[str, Signer], key_pki: KeyPki
) -> None:
    adapter = PyHankoSignerAdapter(signers_by_kind[kind], prefer_pss=pss)
    writer = IncrementalPdfFileWriter(io.BytesIO(_blank_pdf()))
    signed = await signers.async_sign_pdf(
        writer,
        signers.PdfSignatureMetadata(field_name="Signature1", md_algorithm="sha256"),
        signer=adapter,
    )
    reader = PdfFileReader(signed)
    (embedded,) = reader.embedded_signatures
    root = asn1_x509.Certificate.load(key_pki.root.cert_file.read_bytes())
    status = await async_validate_pdf_signature(
        embedded, ValidationContext(trust_roots=[root], allow_fetching=False)
    )
    assert status.intact and status.valid, status.pretty_print_details()
    expected = "rsassa_pss" if pss else ("ecdsa" if kind.endswith("ec") else "rsassa_pkcs1v15")
    assert embedded.signer_info["signature_algorithm"].signature_algo == expected


async def test_adapters_run_in_a_worker_thread(signers_by_kind: dict[str, Signer]) -> None:
    # How the engines will call signxml: in a worker thread, the loop staying free.
    key = as_cryptography_key(signers_by_kind["pkcs11-ec"])
    signature = await asyncio.to_thread(key.sign, b"data", ec.ECDSA(hashes.SHA256()))
    signers_by_kind["pkcs11-ec"].crypto_certificate.public_key().verify(  # type: ignore[call-arg]
        signature, b"data", ec.ECDSA(hashes.SHA256())
    )
