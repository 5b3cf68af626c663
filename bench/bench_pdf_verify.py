"""PDF verification cost: a document with many signatures, in the PDF workers.

    .venv/bin/python bench/bench_pdf_verify.py [--signatures 25] [--runs 3]

Builds the sample PDF/A signed N times (B-B, the sandbox RSA key, in process), then
verifies it through :func:`sidecar.signing.pades_verify.verify_pdf` with a PDF worker
pool, as ``POST /v1/verify`` does. Printed: n, p50, p95 (ms) of a whole verification,
the number of signatures checked within the deadline, and the peak resident memory
(VmHWM) of the daemon's process and of the worker that verified.

Then the same for a document with one signature and a DSS of ``--lt-entries`` CRLs
(each naming the signer's issuer, signed by another key, 50 revoked serials): what a
long-term document with many revocation entries costs the validator.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from sandbox_key import sandbox_rsa_signer
from stats import free_port, summarize, timed

from sidecar.sandbox import ensure_sandbox_pki
from sidecar.signing.pades import PadesEngine, PadesOptions
from sidecar.signing.pades_verify import verify_pdf
from sidecar.signing.pdf_checks import PdfInspector, PdfLimits
from sidecar.signing.report import Level
from sidecar.trust import load_certificates


def crls_for(issuer_der: bytes, count: int) -> list[object]:
    """*count* CRLs in *issuer_der*'s name (signed by a throwaway key: they never match)."""
    from datetime import UTC, datetime, timedelta

    from asn1crypto import crl as asn1_crl
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    issuer = x509.load_der_x509_certificate(issuer_der).issuer
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    made = []
    for number in range(count):
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer)
            .last_update(now - timedelta(hours=1))
            .next_update(now + timedelta(days=7))
            .add_extension(x509.CRLNumber(number + 1), critical=False)
        )
        for serial in range(50):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(number * 1000 + serial + 1)
                .revocation_date(now - timedelta(days=1))
                .build()
            )
        der = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
        made.append(asn1_crl.CertificateList.load(der))
    return made


def with_dss(data: bytes, crls: list[object]) -> bytes:
    """*data* with a DSS update carrying *crls* (an incremental update, as LT tools add)."""
    import io

    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import DocumentSecurityStore

    signature = PdfFileReader(io.BytesIO(data)).embedded_signatures[-1]
    writer = IncrementalPdfFileWriter(io.BytesIO(data))
    DocumentSecurityStore.supply_dss_in_writer(
        writer, signature.pkcs7_content, crls=crls, embed_roots=False
    )
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "profiles" / "samples"


def peak_rss_mb(pid: int | str) -> float:
    """VmHWM (peak resident set) of a process, MB (Linux: /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def measure(
    label: str, data: bytes, signatures: int, inspector: PdfInspector, roots: list, runs: int
) -> None:
    """Time *runs* verifications of *data*; print them and how many were checked."""
    checked: list[int] = []

    async def once() -> None:
        reports = await verify_pdf(data, trust_roots=roots, inspector=inspector)
        checked.append(sum(1 for r in reports if r.details.get("checked") is not False))

    samples, _wall = await timed(once, n=runs)
    summary = summarize(samples)
    print(
        f"verify {label} ({len(data)} bytes): n={summary.n} p50={summary.p50_ms:.0f} ms "
        f"p95={summary.p95_ms:.0f} ms; checked {min(checked)}-{max(checked)}/{signatures}"
    )


async def main(count: int, runs: int, lt_entries: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pki = ensure_sandbox_pki(Path(tmp) / "pki", port=free_port())
        signer = sandbox_rsa_signer(pki)
        roots = load_certificates(pki.roots_pem)
        inspector = PdfInspector(PdfLimits(workers=1))
        try:
            engine = PadesEngine(inspector=inspector)
            data = (SAMPLES / "fee-note.pdf").read_bytes()
            for _ in range(count):
                data = (await engine.sign(data, signer, PadesOptions(level=Level.B_B))).data
            original = (SAMPLES / "fee-note.pdf").read_bytes()
            one = (await engine.sign(original, signer, PadesOptions(level=Level.B_B))).data
            lt = with_dss(one, crls_for(signer.certificate.dump(), lt_entries))
            for label, document, signatures in (
                (f"{count} signatures", data, count),
                (f"1 signature + {lt_entries} DSS CRLs", lt, 1),
            ):
                await measure(label, document, signatures, inspector, roots, runs)
            workers = list(getattr(inspector._workers._pool, "_processes", {}))
            print(f"peak RSS: daemon process {peak_rss_mb('self'):.0f} MB", end="")
            for pid in workers:
                print(f", worker {pid} {peak_rss_mb(pid):.0f} MB", end="")
            print()
        finally:
            inspector.close()
            signer.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signatures", type=int, default=25)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lt-entries", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main(args.signatures, args.runs, args.lt_entries))
