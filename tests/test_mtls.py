"""Client certificates (mTLS) over real TLS on loopback: ``[server] client_ca``, a
client known by its certificate's fingerprint, a token bound to its certificate."""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sidecar.api.app import create_app
from sidecar.clients import ClientStore, Scope, parse_fingerprint
from sidecar.config import ConfigError, ServerSettings, Settings
from sidecar.server import check_binding
from tests.fixtures.daemon import free_port, make_paths

SIGN = frozenset({Scope.SIGN})


@dataclass
class Issued:
    cert: Path
    key: Path
    der: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest()


class TestPKI:
    """CAs and leaf certificates written as PEM files (EC P-256: quick to make)."""

    __test__ = False

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cas: dict[str, tuple[x509.Certificate, ec.EllipticCurvePrivateKey]] = {}

    def _build(
        self,
        name: str,
        issuer: str | None,
        *,
        ca: bool,
        usage: x509.ObjectIdentifier | None = None,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        issuer_cert, issuer_key = self.cas[issuer] if issuer else (None, key)
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_cert.subject if issuer_cert else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
        if usage is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]),
                critical=False,
            )
        return builder.sign(issuer_key, hashes.SHA256()), key

    def ca(self, name: str) -> Path:
        self.cas[name] = self._build(name, None, ca=True)
        path = self.root / f"{name}.pem"
        path.write_bytes(self.cas[name][0].public_bytes(serialization.Encoding.PEM))
        return path

    def leaf(self, name: str, issuer: str, usage: x509.ObjectIdentifier) -> Issued:
        cert, key = self._build(name, issuer, ca=False, usage=usage)
        cert_path, key_path = self.root / f"{name}.pem", self.root / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return Issued(cert_path, key_path, cert.public_bytes(serialization.Encoding.DER))


@dataclass
class Setup:
    pki: TestPKI
    server_ca: Path
    client_ca: Path
    server: Issued
    workstation: Issued
    stranger: Issued  # from the client CA, registered for no client
    rogue: Issued  # from a CA the daemon does not accept


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    pki = TestPKI(tmp_path_factory.mktemp("mtls"))
    server_ca, client_ca = pki.ca("server-ca"), pki.ca("client-ca")
    pki.ca("other-ca")
    client_auth = ExtendedKeyUsageOID.CLIENT_AUTH
    return Setup(
        pki,
        server_ca,
        client_ca,
        pki.leaf("daemon", "server-ca", ExtendedKeyUsageOID.SERVER_AUTH),
        pki.leaf("ws-1", "client-ca", client_auth),
        pki.leaf("stranger", "client-ca", client_auth),
        pki.leaf("rogue", "other-ca", client_auth),
    )


@dataclass
class Daemon:
    url: str
    store: ClientStore
    tokens: dict[str, str]
    server_ca: Path

    async def get(self, path: str, cert: Issued | None = None, token: str | None = None) -> int:
        context = ssl.create_default_context(cafile=str(self.server_ca))
        if cert is not None:
            context.load_cert_chain(str(cert.cert), str(cert.key))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.url + path, ssl=context, headers=headers) as response,
        ):
            return response.status


@pytest.fixture
async def start(setup: Setup, tmp_path: Path) -> AsyncIterator[Callable[[bool], Awaitable[Daemon]]]:
    servers: list[TestServer] = []

    async def make(required: bool) -> Daemon:
        server = ServerSettings(
            tls_cert=setup.server.cert,
            tls_key=setup.server.key,
            client_ca=setup.client_ca,
            client_cert_required=required,
        )
        context = check_binding(server)
        assert context is not None
        paths = make_paths(tmp_path / f"home{len(servers)}")
        store = ClientStore(paths.clients_file)
        tokens = {
            "ws-1": store.create("ws-1", SIGN, cert_sha256=setup.workstation.sha256),
            "signer": store.create("signer", SIGN),
        }
        app = create_app(Settings(server=server), paths, client_store=store)
        test_server = TestServer(app, host="127.0.0.1", port=free_port())
        await test_server.start_server(ssl=context)
        servers.append(test_server)
        return Daemon(f"https://127.0.0.1:{test_server.port}", store, tokens, setup.server_ca)

    yield make
    for server in servers:
        await server.close()


async def test_a_certificate_identifies_its_client(
    start: Callable[[bool], Awaitable[Daemon]], setup: Setup
) -> None:
    daemon = await start(False)
    # The workstation's certificate alone: the client ws-1, no token needed.
    assert await daemon.get("/v1/uuids", setup.workstation) == 200
    # Its token is bound to that certificate: alone (copied off its disk) it is refused.
    assert await daemon.get("/v1/uuids", token=daemon.tokens["ws-1"]) == 401
    assert await daemon.get("/v1/uuids", setup.workstation, daemon.tokens["ws-1"]) == 200
    # A certificate and another client's token: refused.
    assert await daemon.get("/v1/uuids", setup.workstation, daemon.tokens["signer"]) == 401
    # Certificates are optional here: a token-only client still works, also with a
    # certificate of the client CA that names no client.
    assert await daemon.get("/v1/uuids", token=daemon.tokens["signer"]) == 200
    assert await daemon.get("/v1/uuids", setup.stranger, daemon.tokens["signer"]) == 200
    assert await daemon.get("/v1/uuids", setup.stranger) == 401
    assert await daemon.get("/v1/uuids") == 401
    # A certificate from another CA fails the handshake itself.
    with pytest.raises(aiohttp.ClientError):
        await daemon.get("/v1/uuids", setup.rogue, daemon.tokens["signer"])


async def test_a_required_certificate_is_checked_in_the_handshake(
    start: Callable[[bool], Awaitable[Daemon]], setup: Setup
) -> None:
    daemon = await start(True)
    with pytest.raises(aiohttp.ClientError):
        await daemon.get("/v1/health")
    assert await daemon.get("/v1/health", setup.stranger) == 200
    assert await daemon.get("/v1/uuids", setup.workstation) == 200


def test_client_ca_settings_are_checked(setup: Setup, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="client_cert_required"):
        check_binding(ServerSettings(client_cert_required=True))
    with pytest.raises(ConfigError, match="client_ca"):
        check_binding(ServerSettings(client_ca=setup.client_ca))  # no TLS
    missing = tmp_path / "none.pem"
    with pytest.raises(ConfigError, match="client_ca"):
        check_binding(
            ServerSettings(tls_cert=setup.server.cert, tls_key=setup.server.key, client_ca=missing)
        )


def test_fingerprints_as_openssl_prints_them(setup: Setup) -> None:
    colons = ":".join(setup.workstation.sha256[i : i + 2] for i in range(0, 64, 2)).upper()
    assert parse_fingerprint(f"sha256 Fingerprint={colons}") == setup.workstation.sha256
    assert parse_fingerprint(setup.workstation.sha256.upper()) == setup.workstation.sha256
