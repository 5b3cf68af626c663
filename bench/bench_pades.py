"""PAdES signing throughput: B-B, B-LT (in process and through HTTP), the fee-note recipe,
against same-run baselines.

    .venv/bin/python bench/bench_pades.py [--seconds 5] [--size 100000]

Everything runs on loopback: the sandbox PKI (OCSP/CRL) and the daemon (the real app,
guards, token, trust layer with its caches, PDF worker pool) in this process; a fast TSA
(bench/fast_tsa.py: the sandbox TSA's key loaded once — certomancer's own TSA reloads
it per request, ~50 ms of CPU that is not ours) in a child process, as a real TSA is
elsewhere. Baselines measured in the same run: the TSA round trip alone, raw (HTTP
only) and checked (our client), the guarded PDF read alone (the worker round trip),
and one process per document: the pyHanko CLI (``pip install -e '.[bench]'``) at B-B
and at B-LT (same TSA, validation info from the same OCSP/CRL), or, without it, a
fresh Python process signing B-B through pyHanko's API. And the peer a Python
integrator would write instead of calling the daemon (bench/peers.py): pyHanko's
library in one long-running process, signer loaded once, timestamper and validation
context reused, at B-B and B-LT, with our ratio to it.
"Over baseline" is over the checked TSA round trip, then over the raw one.
Printed per case: n, p50, p95 (ms), docs/s.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web
from fast_tsa import running_fast_tsa
from peers import DESCRIPTIONS, run_peer
from sandbox_key import sandbox_rsa_signer
from stats import free_port, summarize, timed

from sidecar.api.app import create_app
from sidecar.api.appkeys import SERVICES
from sidecar.clients import ClientStore, Scope
from sidecar.config import Settings, TrustSettings, TsaSettings
from sidecar.paths import Paths
from sidecar.sandbox import ensure_sandbox_pki, serve_sandbox_pki
from sidecar.signing.pades import PadesEngine, PadesOptions
from sidecar.signing.pdf_checks import PdfInspector
from sidecar.signing.report import Level
from sidecar.signing.trust_binding import TrustValidationDataSource
from sidecar.trust import open_trust
from sidecar.trust.tsa import make_request

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "profiles" / "samples"


def make_pdfa(size: int) -> bytes:
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLES / "make_samples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    base = module.build_pdfa([module.FEE_NOTE_LINES], title="bench")
    return module.build_pdfa(  # type: ignore[no-any-return]
        [module.FEE_NOTE_LINES], title="bench", padding=max(0, size - len(base) - 200)
    )


async def measure(name: str, seconds: float, op: Callable[[], Awaitable[object]]) -> list[float]:
    await op()  # warm-up: caches, pools, first timestamp (pyHanko's size estimate)
    samples, _ = await timed(op, seconds=seconds, at_least=5)
    return samples


def report(
    name: str, samples: list[float], baseline: float | None = None, raw: float | None = None
) -> None:
    """One line: the samples (sequential, so throughput is n over their sum), and the
    p50 over the TSA round trip (checked, then raw) when given."""
    summary = summarize(samples)
    extra = ""
    if baseline is not None:
        extra = f"   {summary.p50_ms - baseline:+7.1f} ms over baseline"
        if raw is not None:
            extra += f" ({summary.p50_ms - raw:+.1f} over the raw round trip)"
    print(summary.line(name, 46, extra))


_ONE_SHOT = """
import sys
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields, signers
key, cert, chain, src, dst = sys.argv[1:6]
signer = signers.SimpleSigner.load(key, cert, ca_chain_files=(chain,))
with open(src, "rb") as inf, open(dst, "wb") as outf:
    meta = signers.PdfSignatureMetadata(field_name="Sig1", subfilter=fields.SigSeedSubFilter.PADES)
    signers.sign_pdf(IncrementalPdfFileWriter(inf), meta, signer=signer, output=outf)
"""


def has_pyhanko_cli() -> bool:
    """Whether the pyHanko CLI (``pip install '.[bench]'``: pyhanko-cli) is installed."""
    return importlib.util.find_spec("pyhanko.cli") is not None


async def cli_baseline(
    pdf: bytes,
    signer_files,  # type: ignore[no-untyped-def]
    runs: int,
    *,
    tsa_url: str | None = None,
    roots: Path | None = None,
) -> list[float]:
    """What a practice does without a daemon: one process per document.

    With pyhanko-cli installed, the real CLI (``pyhanko sign addsig ... pemder``);
    with ``tsa_url`` and ``roots``, at B-LT (timestamp, validation info fetched from
    the sandbox's OCSP/CRL, as the daemon does). Without it, the same B-B work
    through pyHanko's API in a fresh interpreter. Run as a child process without
    blocking this loop, which serves the sandbox's OCSP and CRL.
    """
    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.pdf"
        src.write_bytes(pdf)
        keys = [str(signer_files.key_pem), str(signer_files.cert_pem), str(signer_files.chain_pem)]
        for index in range(runs):
            out = Path(tmp) / f"out{index}.pdf"
            if has_pyhanko_cli():
                command = [sys.executable, "-m", "pyhanko", "sign", "addsig", "--field", "Sig1"]
                command += ["--use-pades"]
                if tsa_url is not None and roots is not None:
                    command += ["--timestamp-url", tsa_url, "--with-validation-info"]
                    command += ["--trust", str(roots), "--trust-replace"]
                command += ["pemder", "--key", keys[0], "--cert", keys[1], "--chain", keys[2]]
                command += ["--no-pass", str(src), str(out)]
            else:
                command = [sys.executable, "-c", _ONE_SHOT, *keys, str(src), str(out)]
            start = time.perf_counter()
            child = await asyncio.create_subprocess_exec(
                *command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            _, errors = await child.communicate()
            samples.append(time.perf_counter() - start)
            if child.returncode != 0:
                raise RuntimeError(f"{command[2:5]} failed: {errors.decode()[-500:]}")
    return samples


async def main(seconds: float, size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pki = ensure_sandbox_pki(root / "pki", port=free_port())
        pdf = make_pdfa(size)
        fee_xml = (SAMPLES / "fee-note.xml").read_bytes()
        print(f"PDF/A input: {len(pdf)} bytes; {seconds:g} s per case")
        async with serve_sandbox_pki(pki):
            tsa_child = running_fast_tsa(pki.directory)
            tsa_url = tsa_child.__enter__().url
            trust_settings = TrustSettings(tsa=(TsaSettings(url=tsa_url),))
            rsa = pki.signers["sandbox-rsa"]
            signer = sandbox_rsa_signer(pki)
            async with (
                aiohttp.ClientSession() as session,
                open_trust(
                    trust_settings,
                    session=session,
                    data_dir=root,
                    extra_anchor_files=[pki.roots_pem],
                ) as trust,
            ):
                inspector = PdfInspector()
                engine = PadesEngine(
                    inspector=inspector,
                    timestamper=trust.tsa.timestamper(),
                    # As the daemon does: validation data from the trust layer's
                    # checked cache (a validation_context alone is pyHanko's slow path).
                    validation_data=TrustValidationDataSource(trust.revocation),
                )
                query = make_request(hashlib.sha256(b"x").digest(), "sha256").dump()

                async def raw_tsa() -> None:
                    async with session.post(
                        tsa_url,
                        data=query,
                        headers={"Content-Type": "application/timestamp-query"},
                    ) as response:
                        await response.read()

                raw = await measure("raw TSA round trip", seconds, raw_tsa)
                report("baseline: TSA round trip alone (raw HTTP)", raw)
                raw_p50 = summarize(raw).p50_ms
                tsa = await measure(
                    "TSA round trip", seconds, lambda: trust.tsa.timestamp_data(b"x", "sha256")
                )
                report("baseline: TSA round trip alone (checked)", tsa)
                guard = await measure("guard", seconds, lambda: inspector.inspect(pdf))
                report("baseline: guarded PDF read (worker)", guard)
                tsa_p50 = summarize(tsa).p50_ms
                ours: dict[str, list[float]] = {}
                for level in (Level.B_B, Level.B_T, Level.B_LT):
                    samples = await measure(
                        level.value, seconds,
                        lambda level=level: engine.sign(pdf, signer, PadesOptions(level=level)),
                    )  # fmt: skip
                    ours[level.value] = samples
                    report(
                        f"in process {level.value}",
                        samples,
                        tsa_p50 if level is not Level.B_B else None,
                        raw_p50,
                    )
                inspector.close()

            # Through HTTP: the real app, its own trust layer on the fast TSA.
            paths = Paths(config_dir=root / "home", data_dir=root / "home", log_dir=root / "home")
            paths.ensure()
            store = ClientStore(paths.clients_file)
            token = store.create("bench", frozenset(Scope))
            settings = Settings(trust=trust_settings)
            app = create_app(settings, paths, client_store=store, sandbox_pki=pki)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await app[SERVICES].xml_workers.started()  # not measuring their background start
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            http_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            base = f"http://127.0.0.1:{http_port}"
            auth = {"Authorization": f"Bearer {token}"}
            async with aiohttp.ClientSession() as client:

                async def http_sign() -> None:
                    async with client.post(
                        f"{base}/v1/pdf/sign?level=B-LT&key=sandbox-rsa",
                        data=pdf,
                        headers={**auth, "Content-Type": "application/pdf"},
                    ) as response:
                        assert response.status == 200, await response.text()
                        await response.read()

                async def http_form() -> None:
                    form = aiohttp.FormData()
                    form.add_field("xml", fee_xml, content_type="application/xml")
                    form.add_field("pdf", pdf, content_type="application/pdf")
                    async with client.post(
                        f"{base}/v1/forms/fee-note/sign?key=sandbox-rsa", data=form, headers=auth
                    ) as response:
                        assert response.status == 200, await response.text()
                        await response.read()

                http_samples = await measure("http", seconds, http_sign)
                report(
                    "HTTP POST /v1/pdf/sign B-LT",
                    http_samples,
                    tsa_p50,
                    raw_p50,
                )
                form_samples = await measure("form", seconds, http_form)
                report(
                    "HTTP fee-note recipe (PAdES-B + XAdES-B-LT)",
                    form_samples,
                    tsa_p50,
                    raw_p50,
                )
            await runner.cleanup()
            signer.close()

            http_rate = len(http_samples) / sum(http_samples)
            form_rate = len(form_samples) / sum(form_samples)
            which = "the pyHanko CLI" if has_pyhanko_cli() else "pyHanko's API (no pyhanko-cli)"
            print(f"baselines: one process per document, {which}:")
            cli = await cli_baseline(pdf, rsa, runs=5)
            report("  one process per document, B-B", cli)
            cases = [("B-B", cli)]
            if has_pyhanko_cli():
                lt = await cli_baseline(pdf, rsa, runs=5, tsa_url=tsa_url, roots=pki.roots_pem)
                report("  one process per document, B-LT", lt)
                cases.append(("B-LT", lt))
            print("peer: pyHanko's library in one long-running process (bench/peers.py):")
            peers = {}
            for level in ("B-B", "B-LT"):
                peers[level] = await run_peer(
                    "pades", level, seconds, rsa, pdf, tsa_url=tsa_url, roots=pki.roots_pem
                )
                print(f"  {level}: {DESCRIPTIONS['pades', level]}")
                report(f"  peer {level}", peers[level])
            tsa_child.__exit__(None, None, None)
        print("ours against the peer (p50, the peer's over ours; same TSA, same OCSP/CRL):")
        for level, theirs in peers.items():
            peer_p50 = summarize(theirs).p50_ms
            mine = [(f"in process {level}", ours[level])]
            if level == "B-LT":
                mine.append(("HTTP POST /v1/pdf/sign B-LT", http_samples))
            for name, samples in mine:
                p50 = summarize(samples).p50_ms
                print(f"  {name:<32} {p50:8.2f} ms vs {peer_p50:8.2f} ms: x{peer_p50 / p50:.1f}")
        for level, samples in cases:
            rate = len(samples) / sum(samples)
            print(
                f"throughput vs one {level} process per document: PAdES-B-LT over HTTP "
                f"x{http_rate / rate:.1f}, fee-note recipe x{form_rate / rate:.1f}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=100_000)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.size))
