"""The sandbox PKI: generated once, served over loopback, checked with openssl."""

from __future__ import annotations

import shutil
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from sidecar.sandbox import (
    SandboxError,
    SandboxPKI,
    ensure_sandbox_pki,
    load_certomancer_config,
    serve_sandbox_pki,
)
from tests.fixtures.sandbox import MakeSandboxPKI, free_port

SIGNER_IDS = ["sandbox-rsa", "sandbox-ec"]


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run openssl; the caller checks returncode (failures are test outcomes)."""
    return subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, text=True, timeout=30, check=False
    )


def load_pems(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def write_pem(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


async def post(url: str, body: bytes, content_type: str) -> bytes:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers={"Content-Type": content_type}) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.read()


async def get(url: str) -> bytes:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.read()


# --- generated material ---------------------------------------------------------------


@pytest.mark.parametrize("signer_id", SIGNER_IDS)
def test_signer_certificate_chains_to_roots(sandbox_pki: SandboxPKI, signer_id: str) -> None:
    signer = sandbox_pki.signers[signer_id]
    result = openssl(
        "verify", "-CAfile", sandbox_pki.roots_pem, "-untrusted", signer.chain_pem, signer.cert_pem
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(": OK")


@pytest.mark.parametrize("signer_id", SIGNER_IDS)
def test_signer_certificate_is_a_physician_pointing_at_the_animator(
    sandbox_pki: SandboxPKI, signer_id: str
) -> None:
    signer = sandbox_pki.signers[signer_id]
    (cert,) = load_pems(signer.cert_pem)
    subject = cert.subject
    assert subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "LU"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Sandbox practice"
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value.startswith("Dr ")

    key_usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert key_usage.critical
    assert key_usage.value.digital_signature and key_usage.value.content_commitment
    assert not key_usage.value.key_cert_sign

    public_key = cert.public_key()
    if signer.key_type == "rsa-2048":
        assert isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size == 2048
    else:
        assert signer.key_type == "ec-p256"
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        assert public_key.curve.name == "secp256r1"

    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    by_method = {d.access_method: d.access_location.value for d in aia}
    assert by_method[AuthorityInformationAccessOID.OCSP] == sandbox_pki.ocsp_urls["intermediate"]
    assert by_method[AuthorityInformationAccessOID.CA_ISSUERS].startswith(sandbox_pki.base_url)
    crl_dp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [n.value for dp in crl_dp for n in dp.full_name or ()] == [
        sandbox_pki.crl_urls["intermediate"]
    ]


def test_tsa_certificate_has_critical_timestamping_eku(sandbox_pki: SandboxPKI) -> None:
    (cert,) = load_pems(sandbox_pki.tsa_cert_pem)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical
    assert list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert any(d.access_location.value == sandbox_pki.ocsp_urls["intermediate"] for d in aia)
    assert cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    chain = sandbox_pki.signers["sandbox-rsa"].chain_pem
    result = openssl(
        "verify", "-purpose", "timestampsign", "-CAfile", sandbox_pki.roots_pem,
        "-untrusted", chain, sandbox_pki.tsa_cert_pem,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("ca", ["root", "intermediate"])
def test_ocsp_responder_certificate(sandbox_pki: SandboxPKI, ca: str) -> None:
    (cert,) = load_pems(sandbox_pki.ocsp_cert_pems[ca])
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    assert cert.extensions.get_extension_for_class(x509.OCSPNoCheck)
    intermediate, root = load_pems(sandbox_pki.signers["sandbox-rsa"].chain_pem)
    assert cert.issuer == {"root": root, "intermediate": intermediate}[ca].subject


@pytest.mark.parametrize("signer_id", SIGNER_IDS)
def test_pkcs12_opens_with_passphrase_and_holds_chain(
    sandbox_pki: SandboxPKI, signer_id: str
) -> None:
    signer = sandbox_pki.signers[signer_id]
    data = signer.p12.read_bytes()
    bundle = pkcs12.load_pkcs12(data, signer.p12_passphrase.encode())
    assert bundle.key is not None and bundle.cert is not None
    (cert,) = load_pems(signer.cert_pem)
    assert bundle.cert.certificate == cert
    assert bundle.key.public_key() == cert.public_key()
    assert [c.certificate for c in bundle.additional_certs] == load_pems(signer.chain_pem)
    with pytest.raises(ValueError):
        pkcs12.load_pkcs12(data, b"not the passphrase")


def test_private_key_files_are_owner_only(sandbox_pki: SandboxPKI) -> None:
    signer = sandbox_pki.signers["sandbox-rsa"]
    for path in (signer.key_pem, signer.p12, *sandbox_pki.directory.glob("keys/*")):
        assert path.stat().st_mode & 0o077 == 0, path
    for directory in (signer.key_pem.parent, sandbox_pki.directory / "keys"):
        assert directory.stat().st_mode & 0o777 == 0o700, directory
    key = serialization.load_pem_private_key(signer.key_pem.read_bytes(), password=None)
    assert signer.key_pem.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert key.public_key() == load_pems(signer.cert_pem)[0].public_key()


def test_second_call_loads_instead_of_regenerating(sandbox_pki: SandboxPKI) -> None:
    key_files = [*sandbox_pki.directory.glob("keys/*"), *sandbox_pki.directory.glob("signers/*/*")]
    before = {path: path.stat().st_mtime_ns for path in key_files}
    root_before = sandbox_pki.roots_pem.read_bytes()

    again = ensure_sandbox_pki(sandbox_pki.directory, host=sandbox_pki.host, port=sandbox_pki.port)

    assert again == sandbox_pki
    assert again.roots_pem.read_bytes() == root_before
    assert {path: path.stat().st_mtime_ns for path in key_files} == before


def test_existing_pki_keeps_its_port(sandbox_pki: SandboxPKI) -> None:
    other_port = sandbox_pki.port + 1 if sandbox_pki.port < 65535 else sandbox_pki.port - 1
    again = ensure_sandbox_pki(sandbox_pki.directory, port=other_port)
    assert again.port == sandbox_pki.port
    assert again.tsa_url == sandbox_pki.tsa_url


def test_edited_config_is_detected(sandbox_pki: SandboxPKI, tmp_path: Path) -> None:
    # The services rebuild every certificate from the config and check it matches the
    # published PEM files (sandbox_services does so for the pristine PKI); an edited
    # config no longer matches, and loading says so instead of serving a PKI that
    # contradicts the published certificates.
    copy = tmp_path / "edited"
    shutil.copytree(sandbox_pki.directory, copy)
    config = copy / sandbox_pki.certomancer_config.name
    config.write_text(config.read_text().replace("Dr Alice Sandbox", "Dr Mallory Sandbox"))
    with pytest.raises(SandboxError, match="delete the directory to regenerate"):
        load_certomancer_config(ensure_sandbox_pki(copy, port=sandbox_pki.port))


@pytest.fixture(scope="module")
def other_pki(make_sandbox_pki: MakeSandboxPKI) -> SandboxPKI:
    """A second PKI, as later tests use for an untrusted signer."""
    return make_sandbox_pki()


def test_two_pkis_have_different_roots(sandbox_pki: SandboxPKI, other_pki: SandboxPKI) -> None:
    other = other_pki
    assert other.roots_pem.read_bytes() != sandbox_pki.roots_pem.read_bytes()
    (root, other_root) = (load_pems(sandbox_pki.roots_pem)[0], load_pems(other.roots_pem)[0])
    assert root.public_key() != other_root.public_key()
    assert root.subject != other_root.subject
    # A signature from the other PKI does not validate against this one's roots.
    signer = other.signers["sandbox-rsa"]
    result = openssl(
        "verify", "-CAfile", sandbox_pki.roots_pem, "-untrusted", signer.chain_pem, signer.cert_pem
    )
    assert result.returncode != 0


def test_concurrent_first_starts_share_one_pki(tmp_path: Path) -> None:
    directory = tmp_path / "sandbox"
    port = free_port()
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: ensure_sandbox_pki(directory, port=port), range(2)))
    assert results[0] == results[1]
    assert {p.name for p in tmp_path.iterdir()} == {"sandbox"}  # no temp dir left behind
    signer = results[0].signers["sandbox-ec"]
    result = openssl(
        "verify", "-CAfile", results[0].roots_pem, "-untrusted", signer.chain_pem, signer.cert_pem
    )
    assert result.returncode == 0, result.stderr


def test_directory_that_is_not_a_sandbox_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a PKI")
    with pytest.raises(SandboxError, match="holds no sandbox PKI"):
        ensure_sandbox_pki(tmp_path)


def test_unusable_directory_raises_sandbox_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SandboxError, match="cannot create the sandbox PKI"):
        ensure_sandbox_pki(blocker / "sandbox")


def test_damaged_metadata_raises_sandbox_error(tmp_path: Path) -> None:
    (tmp_path / "sandbox.json").write_text("{")
    with pytest.raises(SandboxError, match="not valid JSON"):
        ensure_sandbox_pki(tmp_path)


# --- services over loopback -----------------------------------------------------------


async def test_timestamp_verifies_with_openssl(
    sandbox_services: SandboxPKI, tmp_path: Path
) -> None:
    pki = sandbox_services
    data = tmp_path / "data.txt"
    data.write_bytes(b"memoire d'honoraires\n")
    query = tmp_path / "q.tsq"
    made = openssl("ts", "-query", "-data", data, "-sha256", "-cert", "-out", query)
    assert made.returncode == 0, made.stderr

    reply = tmp_path / "r.tsr"
    reply.write_bytes(await post(pki.tsa_url, query.read_bytes(), "application/timestamp-query"))

    text = openssl("ts", "-reply", "-in", reply, "-text")
    assert text.returncode == 0, text.stderr
    assert "Status: Granted." in text.stdout
    chain = pki.signers["sandbox-rsa"].chain_pem
    verify = openssl(
        "ts", "-verify", "-data", data, "-in", reply, "-CAfile", pki.roots_pem, "-untrusted", chain
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "Verification: OK" in verify.stdout
    # The same reply does not vouch for other data.
    data.write_bytes(b"something else\n")
    tampered = openssl(
        "ts", "-verify", "-data", data, "-in", reply, "-CAfile", pki.roots_pem, "-untrusted", chain
    )
    assert tampered.returncode != 0


def test_responders_serve_the_published_certificates_parsed_once(
    sandbox_pki: SandboxPKI,
) -> None:
    """The responders embed certificates parsed back from their DER (an object certomancer
    built is encoded again by every reply: ~8 of a TSA reply's ~11 ms of CPU, measured
    in the report, not here): the same bytes as published, one object per label."""
    from asn1crypto import pem
    from certomancer.registry import CertLabel

    from sidecar.sandbox.services import _certificates_from_der

    arch = load_certomancer_config(sandbox_pki)
    built = arch.get_cert(CertLabel("tsa"))
    _certificates_from_der(arch)
    served = arch.get_cert(CertLabel("tsa"))
    assert served is not built and arch.get_cert(CertLabel("tsa")) is served
    assert served.dump() == pem.unarmor(sandbox_pki.tsa_cert_pem.read_bytes())[2]
    root = arch.get_cert(CertLabel("root"))
    assert root.dump() == pem.unarmor(sandbox_pki.roots_pem.read_bytes())[2]


@pytest.mark.parametrize(
    ("subject", "ca"),
    [("sandbox-rsa", "intermediate"), ("sandbox-ec", "intermediate"), ("intermediate", "root")],
)
async def test_ocsp_says_good(
    sandbox_services: SandboxPKI, tmp_path: Path, subject: str, ca: str
) -> None:
    pki = sandbox_services
    intermediate, root = load_pems(pki.signers["sandbox-rsa"].chain_pem)
    if subject == "intermediate":
        cert = write_pem(tmp_path / "cert.pem", intermediate)
        issuer = write_pem(tmp_path / "issuer.pem", root)
    else:
        cert = pki.signers[subject].cert_pem
        issuer = write_pem(tmp_path / "issuer.pem", intermediate)
    request, response = tmp_path / "req.der", tmp_path / "resp.der"
    made = openssl("ocsp", "-issuer", issuer, "-cert", cert, "-reqout", request)
    assert made.returncode == 0, made.stderr

    response.write_bytes(
        await post(pki.ocsp_urls[ca], request.read_bytes(), "application/ocsp-request")
    )

    text = openssl("ocsp", "-respin", response, "-resp_text", "-noverify")
    assert text.returncode == 0, text.stderr
    assert "Response Status: successful" in text.stdout
    assert "Cert Status: good" in text.stdout
    # Signed by a responder that chains to roots.pem, and echoing the request's nonce.
    checked = openssl(
        "ocsp", "-respin", response, "-reqin", request,
        "-CAfile", pki.roots_pem, "-verify_other", pki.signers["sandbox-rsa"].chain_pem,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Response verify OK" in checked.stderr
    (cert_obj,) = load_pems(cert)
    assert f"Serial Number: {cert_obj.serial_number:X}" in text.stdout


@pytest.mark.parametrize("ca", ["root", "intermediate"])
async def test_crl_parses_and_verifies(
    sandbox_services: SandboxPKI, tmp_path: Path, ca: str
) -> None:
    pki = sandbox_services
    crl = tmp_path / f"{ca}.crl"
    crl.write_bytes(await get(pki.crl_urls[ca]))
    text = openssl("crl", "-inform", "DER", "-in", crl, "-noout", "-text")
    assert text.returncode == 0, text.stderr
    assert "Certificate Revocation List (CRL)" in text.stdout
    issuer = load_pems(pki.signers["sandbox-rsa"].chain_pem)[1 if ca == "root" else 0]
    cn = issuer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert f"CN = {cn}" in text.stdout
    verified = openssl(
        "crl",
        "-inform",
        "DER",
        "-in",
        crl,
        "-noout",
        "-CAfile",
        pki.signers["sandbox-rsa"].chain_pem,
    )
    assert verified.returncode == 0, verified.stderr
    assert "verify OK" in verified.stdout + verified.stderr


async def test_ca_issuers_url_serves_the_intermediate(sandbox_services: SandboxPKI) -> None:
    pki = sandbox_services
    (cert,) = load_pems(pki.signers["sandbox-ec"].cert_pem)
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    (url,) = [
        d.access_location.value
        for d in aia
        if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
    ]
    served = x509.load_der_x509_certificate(await get(url))
    assert served == load_pems(pki.signers["sandbox-ec"].chain_pem)[0]


async def test_port_in_use_raises_sandbox_error(sandbox_services: SandboxPKI) -> None:
    # The session services hold the port: a second server on it must fail clearly.
    with pytest.raises(SandboxError, match="taken: another sidecar already serves this same"):
        async with serve_sandbox_pki(sandbox_services):
            pass
    # ...and the first one still answers.
    assert await get(sandbox_services.crl_urls["root"])


async def test_services_stop_on_exit(other_pki: SandboxPKI) -> None:
    pki = other_pki
    async with serve_sandbox_pki(pki):
        assert await get(pki.crl_urls["intermediate"])
    with socket.socket() as sock:
        assert sock.connect_ex((pki.host, pki.port)) != 0
