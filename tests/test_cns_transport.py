"""The transport adapter against a loopback CNS stand-in that demands what the eSanté
platform demands: a TLS client certificate and an OAuth2 (client-credentials) token."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from sidecar.cns.transport import CnsConfigError, CnsTransport, CnsUnreachable
from sidecar.config import CnsAuth, CnsOperation, CnsSettings, CnsTls, CnsWire
from tests.fixtures.sandbox import free_port


def _cert(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    ip: str | None = None,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), False
        )
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_p12: Path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("tls")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test CA", ca_key, None, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _cert("cns.test", server_key, (ca.subject, ca_key), ip="127.0.0.1")
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _cert("practice-1234", client_key, (ca.subject, ca_key))
    pem = serialization.Encoding.PEM
    files = {
        "ca": ca.public_bytes(pem),
        "server_cert": server.public_bytes(pem),
        "server_key": _pem_key(server_key),
        "client_cert": client.public_bytes(pem),
        "client_key": _pem_key(client_key),
        "client_p12": pkcs12.serialize_key_and_certificates(
            b"practice",
            client_key,
            client,
            None,
            serialization.BestAvailableEncryption(b"p12-secret"),
        ),
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    return Pki(**{name: d / name for name in files})


@dataclass
class Platform:
    url: str
    token_fetches: int = 0
    current_token: str = ""
    seen: list[tuple[str, str, str]] = None  # type: ignore[assignment]


@pytest.fixture
async def platform(pki: Pki) -> AsyncIterator[Platform]:
    port = free_port()
    state = Platform(url=f"https://127.0.0.1:{port}", seen=[])

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        auth = aiohttp.BasicAuth.decode(request.headers["Authorization"])
        if (auth.login, auth.password, form.get("grant_type")) != (
            "vendor-app",
            "oauth-secret",
            "client_credentials",
        ):
            return web.json_response({"error": "invalid_client"}, status=401)
        state.token_fetches += 1
        state.current_token = f"token-{state.token_fetches}"
        return web.json_response({"access_token": state.current_token, "expires_in": 3600})

    async def deposit(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert")  # type: ignore[union-attr]
        cn = dict(x[0] for x in peer["subject"])["commonName"]
        if request.headers.get("Authorization") != f"Bearer {state.current_token}":
            return web.Response(status=401)
        state.seen.append((cn, request.headers["X-Message-Id"], request.path))
        return web.Response(text="<ok/>", content_type="application/xml")

    app = web.Application()
    app.router.add_post("/oauth/token", token)
    app.router.add_put("/api/v9/memoires/{uuid}", deposit)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    yield state
    await runner.cleanup()


def settings_for(platform: Platform, tls: CnsTls, auth: CnsAuth) -> CnsSettings:
    # Another wire contract than the simulator's, entirely from configuration.
    wire = CnsWire(
        deposit=CnsOperation("PUT", "/memoires/{uuid}"), idempotency_header="X-Message-Id"
    )
    return CnsSettings(environment="test", tls=tls, auth=auth, wire=wire, delivery_timeout=5)


async def test_client_certificate_oauth2_and_wire_mapping(
    platform: Platform, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CNS_SECRET", "oauth-secret")
    auth = CnsAuth(
        mode="oauth2",
        token_url=platform.url + "/oauth/token",
        client_id="vendor-app",
        client_secret_env="CNS_SECRET",
    )
    tls = CnsTls(client_cert=pki.client_cert, client_key=pki.client_key, ca_file=pki.ca)
    async with aiohttp.ClientSession() as session:
        transport = CnsTransport(
            settings_for(platform, tls, auth), platform.url + "/api/v9", session
        )
        answer = await transport.deposit("3f2b8c1e-6d4a-4b7e-9c2d-1a5e8f7b6c3d", b"<n/>")
        assert answer.status == 200 and answer.body == b"<ok/>"
        # The platform revokes the token: one 401, a new token, the call goes through.
        platform.current_token = "revoked-elsewhere"
        answer = await transport.deposit("9a1c7e2b-4f3d-4e8a-b6c5-2d9f0e1a3b4c", b"<n/>")
        assert answer.status == 200
    assert platform.token_fetches == 2
    assert platform.seen == [
        (
            "practice-1234",
            "3f2b8c1e-6d4a-4b7e-9c2d-1a5e8f7b6c3d",
            "/api/v9/memoires/3f2b8c1e-6d4a-4b7e-9c2d-1a5e8f7b6c3d",
        ),
        (
            "practice-1234",
            "9a1c7e2b-4f3d-4e8a-b6c5-2d9f0e1a3b4c",
            "/api/v9/memoires/9a1c7e2b-4f3d-4e8a-b6c5-2d9f0e1a3b4c",
        ),
    ]


async def test_pkcs12_client_certificate_and_bearer(
    platform: Platform, pki: Pki, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("P12_PASS", "p12-secret")
    (tmp_path / "token").write_text("fixed-bearer\n")
    platform.current_token = "fixed-bearer"
    tls = CnsTls(pkcs12=pki.client_p12, pkcs12_passphrase_env="P12_PASS", ca_file=pki.ca)
    auth = CnsAuth(mode="bearer", token_file=tmp_path / "token")
    async with aiohttp.ClientSession() as session:
        transport = CnsTransport(
            settings_for(platform, tls, auth), platform.url + "/api/v9", session
        )
        answer = await transport.deposit("3f2b8c1e-6d4a-4b7e-9c2d-1a5e8f7b6c3d", b"<n/>")
    assert answer.status == 200 and platform.seen[0][0] == "practice-1234"


async def test_no_client_certificate_is_unreachable(platform: Platform, pki: Pki) -> None:
    tls = CnsTls(ca_file=pki.ca)
    async with aiohttp.ClientSession() as session:
        transport = CnsTransport(settings_for(platform, tls, CnsAuth()), platform.url, session)
        with pytest.raises(CnsUnreachable):
            await transport.deposit("3f2b8c1e-6d4a-4b7e-9c2d-1a5e8f7b6c3d", b"<n/>")


def test_configuration_errors_are_named(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE", raising=False)
    with pytest.raises(CnsConfigError, match="NOPE"):
        CnsTransport(
            CnsSettings(auth=CnsAuth(mode="bearer", token_env="NOPE")),
            "http://x",
            None,  # type: ignore[arg-type]
        )
    monkeypatch.setenv("P12_PASS", "wrong")
    with pytest.raises(CnsConfigError, match="client certificate"):
        CnsTransport(
            CnsSettings(tls=CnsTls(pkcs12=pki.client_p12, pkcs12_passphrase_env="P12_PASS")),
            "http://x",
            None,  # type: ignore[arg-type]
        )
