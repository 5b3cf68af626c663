"""PDF verification cost: a document with many signatures, in the PDF workers.

    .venv/bin/python bench/bench_pdf_verify.py [--signatures 25] [--runs 3]

Builds the sample PDF/A signed N times (B-B, the sandbox RSA key, in process), then
verifies it through :func:`sidecar.signing.pades_verify.verify_pdf` with a PDF worker
pool, as ``POST /v1/verify`` does. Printed: n, p50, p95 (ms) of a whole verification,
the number of signatures checked within the deadline, and the peak resident memory
(VmHWM) of the daemon's process and of the worker that verified.

Not measured here: an LT document with 100 revocation entries (issue #20 asks for it
too; not built yet).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from stats import free_port, summarize, timed

from sidecar.keys import KeyConfig, create_signer
from sidecar.sandbox import ensure_sandbox_pki
from sidecar.signing.pades import PadesEngine, PadesOptions
from sidecar.signing.pades_verify import verify_pdf
from sidecar.signing.pdf_checks import PdfInspector, PdfLimits
from sidecar.signing.report import Level
from sidecar.trust import load_certificates

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "profiles" / "samples"


def peak_rss_mb(pid: int | str) -> float:
    """VmHWM (peak resident set) of a process, MB (Linux: /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def main(count: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pki = ensure_sandbox_pki(Path(tmp) / "pki", port=free_port())
        rsa = pki.signers["sandbox-rsa"]
        signer = create_signer(
            KeyConfig(
                id="bench", backend="pkcs12", path=rsa.p12,
                passphrase_source="config", passphrase=rsa.p12_passphrase,
            )
        )  # fmt: skip
        signer.open()
        roots = load_certificates(pki.roots_pem)
        inspector = PdfInspector(PdfLimits(workers=1))
        try:
            engine = PadesEngine(inspector=inspector)
            data = (SAMPLES / "fee-note.pdf").read_bytes()
            for _ in range(count):
                data = (await engine.sign(data, signer, PadesOptions(level=Level.B_B))).data
            print(f"{count} signatures, {len(data)} bytes; {runs} verification(s)")
            checked: list[int] = []

            async def once() -> None:
                reports = await verify_pdf(data, trust_roots=roots, inspector=inspector)
                checked.append(sum(1 for r in reports if r.details.get("checked") is not False))

            samples, _wall = await timed(once, n=runs)
            summary = summarize(samples)
            workers = list(getattr(inspector._workers._pool, "_processes", {}))
            print(
                f"verify {count} signatures: n={summary.n} p50={summary.p50_ms:.0f} ms "
                f"p95={summary.p95_ms:.0f} ms; checked {min(checked)}-{max(checked)}/{count}"
            )
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
    args = parser.parse_args()
    asyncio.run(main(args.signatures, args.runs))
