"""The peers a Python integrator would write instead of calling the daemon (issue #19).

One long-running process per peer and level (this module, run as a child by
``bench_pades.py`` and ``bench_xades.py``), built once and reused for every document,
as an integrator's own service would: the signer loaded once, one
``HTTPTimeStamper`` (its aiohttp session kept), one ``ValidationContext`` fetching
OCSP/CRL over HTTP and caching what it fetched. Documents are signed one after the
other for ``--seconds``; the per-document times (seconds) go to stdout as JSON.

- ``pades``: pyHanko's library, ``async_sign_pdf`` with PAdES subfilter; B-LT adds the
  timestamp and ``embed_validation_info`` (pyHanko validates the signer's and the TSA's
  paths and embeds what it fetched, a DSS). Tuned as a careful integrator would: the
  key parsed once (``SimpleSigner`` parses it per signature, tens of ms) and the
  signature's room given (else pyHanko signs twice, a dry run to size it).
- ``xades``: signxml's ``XAdESSigner`` (B-B); ``B-LT`` adds what signxml lacks, as an
  integrator would glue it: an RFC 3161 timestamp of the exclusive-canonical
  ``ds:SignatureValue`` through pyHanko's ``HTTPTimeStamper``, the signer's path
  validated by pyhanko-certvalidator (revocation required, fetched once then cached)
  and its certificates and OCSP/CRL data embedded as ``xades:CertificateValues`` and
  ``xades:RevocationValues``. It does not validate the TSA's path nor embed its
  revocation data, nor check the token (nonce, imprint, TSA signature): less than our
  B-LT does, so the ratio flatters the peer.

Bench code calling the peers' public APIs; nothing here is used by sidecar.

    python bench/peers.py pades|xades B-B|B-LT --seconds S --key K --cert C --chain CH
        --input FILE [--tsa URL --roots PEM]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import io
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

XADES = "http://uri.etsi.org/01903/v1.3.2#"
DS = "http://www.w3.org/2000/09/xmldsig#"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"

#: What each peer does, printed beside its figures by the benches.
DESCRIPTIONS = {
    ("pades", "B-B"): "pyHanko library, key parsed once, size reserved",
    ("pades", "B-LT"): "+ HTTPTimeStamper, DSS via a reused ValidationContext",
    ("xades", "B-B"): "signxml XAdESSigner, key loaded once",
    ("xades", "B-LT"): (
        "signxml + pyHanko HTTPTimeStamper + certvalidator's OCSP/CRL "
        "(no TSA path, no token checks)"
    ),
}


async def _loop(seconds: float, once: Callable[[], Awaitable[object]]) -> list[float]:
    for _ in range(2):
        await once()  # warm-up: connections, the validation context's fetches
    samples: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(samples) < 5:
        start = time.perf_counter()
        await once()
        samples.append(time.perf_counter() - start)
    return samples


def _context(roots: str | None):  # type: ignore[no-untyped-def]
    from pyhanko.keys import load_certs_from_pemder
    from pyhanko_certvalidator import ValidationContext

    anchors = list(load_certs_from_pemder([roots])) if roots else []
    return ValidationContext(trust_roots=anchors, allow_fetching=True, revocation_mode="require")


#: Room for the CMS signature (with its timestamp token) in the PDF: ample for RSA-2048.
_RESERVED = 16384


def _parse_key_once(signer) -> None:  # type: ignore[no-untyped-def]
    """Tune the peer: pyHanko's ``SimpleSigner`` parses its key again for every
    signature (``load_der_private_key``, RSA key checks: tens of ms); an integrator
    after speed would keep the parsed key, as the daemon does. RSA PKCS#1 v1.5 only
    (the sandbox's key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from pyhanko.sign.general import get_pyca_cryptography_hash

    key = serialization.load_der_private_key(signer.signing_key.dump(), password=None)
    assert isinstance(key, RSAPrivateKey)

    def sign_raw(data: bytes, digest_algorithm: str) -> bytes:
        return key.sign(data, PKCS1v15(), get_pyca_cryptography_hash(digest_algorithm))

    signer.sign_raw = sign_raw


async def pades(args: argparse.Namespace) -> list[float]:
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers
    from pyhanko.sign.timestamps import HTTPTimeStamper

    pdf = args.data
    signer = signers.SimpleSigner.load(args.key, args.cert, ca_chain_files=(args.chain,))
    assert signer is not None
    _parse_key_once(signer)
    lt = args.level == "B-LT"
    timestamper = HTTPTimeStamper(args.tsa) if lt else None
    meta = signers.PdfSignatureMetadata(
        field_name="Sig1",
        subfilter=fields.SigSeedSubFilter.PADES,
        embed_validation_info=lt,
        validation_context=_context(args.roots) if lt else None,
        use_pades_lta=False,
    )

    async def once() -> bytes:
        writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
        out = await signers.async_sign_pdf(
            writer,
            meta,
            signer=signer,
            timestamper=timestamper,
            # Without it pyHanko signs twice (a dry run sizes the signature).
            bytes_reserved=_RESERVED,
        )
        return out.getvalue()  # type: ignore[no-any-return, union-attr]

    return await _loop(args.seconds, once)


async def xades(args: argparse.Namespace) -> list[float]:
    from asn1crypto import x509
    from cryptography import x509 as cx509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from lxml import etree
    from pyhanko.keys import load_certs_from_pemder
    from pyhanko.sign.timestamps import HTTPTimeStamper
    from pyhanko_certvalidator import CertificateValidator
    from signxml import SignatureConstructionMethod
    from signxml.xades import XAdESSigner

    document = args.data
    key = load_pem_private_key(args.key_pem, password=None)
    pems = args.certs_pem
    chain = cx509.load_pem_x509_certificates(pems)
    lt = args.level == "B-LT"
    timestamper = HTTPTimeStamper(args.tsa) if lt else None
    context = _context(args.roots) if lt else None
    asn1_chain: list[x509.Certificate] = list(load_certs_from_pemder([args.cert, args.chain]))

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    async def once() -> bytes:
        signer = XAdESSigner(
            method=SignatureConstructionMethod.enveloped,
            signature_algorithm="rsa-sha256",
            c14n_algorithm=EXC_C14N,
        )
        root = signer.sign(etree.fromstring(document), key=key, cert=chain)  # type: ignore[arg-type]
        if not lt:
            return etree.tostring(root)
        assert timestamper is not None and context is not None
        signature = root.find(f"{{{DS}}}Signature")
        assert signature is not None
        value = signature.find(f"{{{DS}}}SignatureValue")
        digest = hashlib.sha256(etree.tostring(value, method="c14n", exclusive=True)).digest()
        token = await timestamper.async_timestamp(digest, "sha256")
        validator = CertificateValidator(
            asn1_chain[0], intermediate_certs=asn1_chain[1:], validation_context=context
        )
        await validator.async_validate_usage({"digital_signature"})
        qualifying = signature.find(f".//{{{XADES}}}QualifyingProperties")
        assert qualifying is not None
        unsigned = etree.SubElement(qualifying, f"{{{XADES}}}UnsignedProperties")
        props = etree.SubElement(unsigned, f"{{{XADES}}}UnsignedSignatureProperties")
        stamp = etree.SubElement(props, f"{{{XADES}}}SignatureTimeStamp")
        etree.SubElement(stamp, f"{{{DS}}}CanonicalizationMethod", Algorithm=EXC_C14N)
        etree.SubElement(stamp, f"{{{XADES}}}EncapsulatedTimeStamp").text = b64(token.dump())
        values = etree.SubElement(props, f"{{{XADES}}}CertificateValues")
        for cert in asn1_chain:
            etree.SubElement(values, f"{{{XADES}}}EncapsulatedX509Certificate").text = b64(
                cert.dump()
            )
        revocation = etree.SubElement(props, f"{{{XADES}}}RevocationValues")
        if context.ocsps:
            ocsps = etree.SubElement(revocation, f"{{{XADES}}}OCSPValues")
            for response in context.ocsps:
                etree.SubElement(ocsps, f"{{{XADES}}}EncapsulatedOCSPValue").text = b64(
                    response.dump()
                )
        if context.crls:
            crls = etree.SubElement(revocation, f"{{{XADES}}}CRLValues")
            for crl in context.crls:
                etree.SubElement(crls, f"{{{XADES}}}EncapsulatedCRLValue").text = b64(crl.dump())
        return etree.tostring(root)

    return await _loop(args.seconds, once)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peer", choices=("pades", "xades"))
    parser.add_argument("level", choices=("B-B", "B-LT"))
    parser.add_argument("--seconds", type=float, default=5.0)
    for name in ("--key", "--cert", "--chain", "--input"):
        parser.add_argument(name, required=True)
    parser.add_argument("--tsa")
    parser.add_argument("--roots")
    args = parser.parse_args()
    if args.level == "B-LT" and not (args.tsa and args.roots):
        parser.error("B-LT needs --tsa and --roots")
    # Read here: the peers' coroutines do no blocking file reads.
    args.data = Path(args.input).read_bytes()
    args.key_pem = Path(args.key).read_bytes()
    args.certs_pem = Path(args.cert).read_bytes() + Path(args.chain).read_bytes()
    run = pades if args.peer == "pades" else xades
    json.dump(asyncio.run(run(args)), sys.stdout)


async def run_peer(
    peer: str,
    level: str,
    seconds: float,
    signer_files,  # type: ignore[no-untyped-def]
    document: bytes,
    *,
    tsa_url: str,
    roots: Path,
) -> list[float]:
    """Run the ``peer`` at ``level`` in a child process (without blocking this loop,
    which may serve the sandbox PKI); its per-document times in seconds."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "input"
        source.write_bytes(document)
        command = [sys.executable, str(Path(__file__)), peer, level, "--seconds", str(seconds)]
        command += ["--key", str(signer_files.key_pem), "--cert", str(signer_files.cert_pem)]
        command += ["--chain", str(signer_files.chain_pem), "--input", str(source)]
        command += ["--tsa", tsa_url, "--roots", str(roots)]
        child = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, errors = await child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"peer {peer} {level} failed: {errors.decode()[-800:]}")
    samples: list[float] = json.loads(out)
    return samples


if __name__ == "__main__":
    main()
