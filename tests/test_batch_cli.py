"""``sidecar sign`` / ``sidecar verify`` on files: the same engines, no daemon running."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.daemon import free_port
from tests.fixtures.pades import pdfsig_report
from tests.fixtures.xades import xmlsec1_verify

SAMPLES = Path(__file__).resolve().parents[1] / "profiles" / "samples"


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("cli-home")
    (home / "sidecar.toml").write_text(f"[sandbox]\nport = {free_port()}\n")
    return home


def run(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIDECAR_HOME": str(home), **(env or {})}
    env.pop("SOFTHSM2_CONF", None)  # the sandbox makes its own token
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_sign_form_and_pdf_then_verify(cli_home: Path, tmp_path: Path) -> None:
    for name in ("fee-note.xml", "fee-note.pdf"):
        shutil.copy(SAMPLES / name, tmp_path / name)
    form = run(
        cli_home,
        "sign",
        "--sandbox",
        "--profile",
        "fee-note",
        "--pdf",
        str(tmp_path / "fee-note.pdf"),
        str(tmp_path / "fee-note.xml"),
    )
    assert form.returncode == 0, form.stderr
    assert "signed at B-LT" in form.stdout
    signed_xml = tmp_path / "fee-note.signed.xml"
    roots = cli_home / "sandbox" / "roots.pem"
    checked = xmlsec1_verify(signed_xml.read_bytes(), roots)
    assert checked.returncode == 0, checked.stderr

    pdf = run(cli_home, "sign", "--sandbox", "--level", "B-LT", str(tmp_path / "fee-note.pdf"))
    assert pdf.returncode == 0, pdf.stderr
    signed_pdf = tmp_path / "fee-note.signed.pdf"
    assert "Signature is Valid" in pdfsig_report(signed_pdf.read_bytes())

    verified = run(cli_home, "verify", "--sandbox", "--json", str(signed_xml), str(signed_pdf))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    reports = {Path(r["file"]).name: r["report"] for r in json.loads(verified.stdout)}
    (xml_signature,) = reports["fee-note.signed.xml"]["signatures"]
    assert (xml_signature["level"], xml_signature["indication"]) == ("B-LT", "TOTAL_PASSED")
    (pdf_signature,) = reports["fee-note.signed.pdf"]["signatures"]
    assert (pdf_signature["level"], pdf_signature["indication"]) == ("B-LT", "TOTAL_PASSED")
    assert reports["fee-note.signed.xml"]["embedded_pdf"]["signatures"][0]["format"] == "PAdES"


def test_verify_fails_on_tampered_and_unsigned(cli_home: Path, tmp_path: Path) -> None:
    shutil.copy(SAMPLES / "pid-simulation.xml", tmp_path / "pid.xml")
    signed = run(cli_home, "sign", "--sandbox", "--level", "B-B", str(tmp_path / "pid.xml"))
    assert signed.returncode == 0, signed.stderr
    document = (tmp_path / "pid.signed.xml").read_bytes()
    assert b"Dr Anne Muller" in document
    tampered = tmp_path / "tampered.xml"
    tampered.write_bytes(document.replace(b"Dr Anne Muller", b"Dr Anne Mullet"))
    report = run(cli_home, "verify", "--sandbox", str(tampered))
    assert report.returncode == 1
    assert "TOTAL_FAILED" in report.stdout
    unsigned = run(cli_home, "verify", "--sandbox", str(SAMPLES / "pid-simulation.xml"))
    assert unsigned.returncode == 1 and "no signature" in unsigned.stdout


def test_sign_refusal_is_reported_and_nothing_written(cli_home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "dtd.xml"
    bad.write_bytes(b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>')
    good = tmp_path / "good.xml"
    good.write_bytes(b"<a><b>1</b></a>")
    out = tmp_path / "out"
    out.mkdir()
    result = run(
        cli_home, "sign", "--sandbox", "--level", "B-B", "--out", str(out), str(bad), str(good)
    )
    assert result.returncode == 1
    assert "forbidden_dtd" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["good.signed.xml"]
    missing = run(cli_home, "sign", "--sandbox", str(tmp_path / "absent.xml"))
    assert missing.returncode == 2 and "no such file" in missing.stderr


@pytest.mark.parametrize(
    ("locale", "signed", "unsigned"),
    [
        ("fr_LU.UTF-8", "signé au niveau B-B", "aucune signature"),
        ("de_LU.UTF-8", "signiert auf Stufe B-B", "keine Signatur"),
    ],
)
def test_summaries_in_the_os_locale(
    cli_home: Path, tmp_path: Path, locale: str, signed: str, unsigned: str
) -> None:
    document = tmp_path / "note.xml"
    document.write_bytes(b"<a><b>1</b></a>")
    env_locale = {"LC_ALL": locale}
    result = run(cli_home, "sign", "--sandbox", "--level", "B-B", str(document), env=env_locale)
    assert result.returncode == 0, result.stderr
    assert f"{document}: {signed} -> " in result.stdout, result.stdout
    report = run(
        cli_home, "verify", "--sandbox", str(SAMPLES / "pid-simulation.xml"), env=env_locale
    )
    assert report.returncode == 1 and unsigned in report.stdout, report.stdout


def test_sign_a_folder_as_one_batch_then_verify_the_folder(cli_home: Path, tmp_path: Path) -> None:
    """A folder's XML and PDF files are signed together (one batch, one PIN prompt for
    a key that asks one); a signed output of an earlier run and other files are left
    alone; ``verify`` takes the output folder."""
    folder = tmp_path / "today"
    folder.mkdir()
    shutil.copy(SAMPLES / "fee-note.pdf", folder / "letter-1.pdf")
    shutil.copy(SAMPLES / "fee-note.pdf", folder / "letter-2.PDF")
    (folder / "report.xml").write_bytes(b"<report><line>42.00</line></report>")
    (folder / "old.signed.pdf").write_bytes((SAMPLES / "fee-note.pdf").read_bytes())
    (folder / "notes.txt").write_text("not a document")
    out = tmp_path / "signed"
    done = run(cli_home, "sign", "--sandbox", "--level", "B-B", str(folder), "--out", f"{out}/")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "letter-1.signed.pdf",
        "letter-2.signed.PDF",
        "report.signed.xml",
    ]
    verified = run(cli_home, "verify", "--sandbox", "--json", str(out))
    reports = {Path(r["file"]).name: r["report"] for r in json.loads(verified.stdout)}
    assert set(reports) == {"letter-1.signed.pdf", "letter-2.signed.PDF", "report.signed.xml"}
    for report in reports.values():
        (signature,) = report["signatures"]
        assert signature["level"] == "B-B"
