"""TSA and CNS credentials from the OS secret store (``*_keyring`` settings), as
``sidecar setup`` writes them: against the real TLS + OAuth2 platform of the CNS
transport tests, and the TSA endpoint's basic auth."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from sidecar.cns.transport import CnsConfigError, CnsTransport
from sidecar.config import CnsAuth, CnsTls, TsaSettings, load_settings
from sidecar.trust.tsa import TsaEndpoint
from tests.fixtures.softhsm import MemoryKeyring
from tests.test_cns_transport import Pki, Platform, pki, platform, settings_for

__all__ = ["pki", "platform"]  # the CNS transport tests' fixtures, used here too


def test_tsa_password_from_the_secret_store(memory_keyring: MemoryKeyring) -> None:
    settings = TsaSettings(
        url="https://tsa.example.lu/", username="cabinet", password_keyring="tsa:tsa.example.lu"
    )
    with pytest.raises(ValueError, match=r"entry 'tsa:tsa\.example\.lu'"):
        TsaEndpoint.from_settings(settings)
    memory_keyring.set_password("sidecar", "tsa:tsa.example.lu", "tsa-pw-from-store")
    endpoint = TsaEndpoint.from_settings(settings)
    assert endpoint.authorization == aiohttp.encode_basic_auth("cabinet", "tsa-pw-from-store")
    # A keyring entry without a user name is a mistake, as a password file is.
    with pytest.raises(ValueError, match="no username"):
        TsaEndpoint.from_settings(TsaSettings(url="https://t/", password_keyring="x"))


def test_the_settings_exist_in_the_file(tmp_path: Path) -> None:
    file = tmp_path / "sidecar.toml"
    file.write_text(
        '[[trust.tsa]]\nurl = "https://t/"\nusername = "u"\npassword_keyring = "tsa:t"\n'
        '[cns.auth]\nmode = "oauth2"\ntoken_keyring = "a"\nclient_secret_keyring = "b"\n'
        '[cns.tls]\npkcs12_passphrase_keyring = "c"\n'
    )
    settings = load_settings(file, required=True)
    assert settings.trust.tsa[0].password_keyring == "tsa:t"
    assert (settings.cns.auth.token_keyring, settings.cns.auth.client_secret_keyring) == ("a", "b")
    assert settings.cns.tls.pkcs12_passphrase_keyring == "c"


def _auth(mode: str, platform: Platform) -> CnsAuth:
    if mode == "bearer":
        platform.current_token = "bearer-from-store"
        return CnsAuth(mode="bearer", token_keyring="cns:test:token")
    return CnsAuth(
        mode="oauth2",
        token_url=platform.url + "/oauth/token",
        client_id="vendor-app",
        client_secret_keyring="cns:test:client-secret",
    )


@pytest.mark.parametrize(
    ("mode", "secret_entry", "secret"),
    [("bearer", "cns:test:token", "bearer-from-store"),
     ("oauth2", "cns:test:client-secret", "oauth-secret")],
)  # fmt: skip
async def test_cns_credentials_from_the_store(
    mode: str,
    secret_entry: str,
    secret: str,
    platform: Platform,
    pki: Pki,
    memory_keyring: MemoryKeyring,
) -> None:
    """The client certificate's passphrase and the bearer token or OAuth2 client
    secret, each from its entry; a missing entry is named at start."""
    tls = CnsTls(pkcs12=pki.client_p12, pkcs12_passphrase_keyring="cns:test:pkcs12", ca_file=pki.ca)
    settings = settings_for(platform, tls, _auth(mode, platform))
    with pytest.raises(CnsConfigError, match="entry 'cns:test:pkcs12'"):
        CnsTransport(settings, platform.url, None)  # type: ignore[arg-type]
    memory_keyring.set_password("sidecar", "cns:test:pkcs12", "p12-secret")
    with pytest.raises(CnsConfigError, match=f"entry '{secret_entry}'"):
        CnsTransport(settings, platform.url, None)  # type: ignore[arg-type]
    memory_keyring.set_password("sidecar", secret_entry, secret)
    async with aiohttp.ClientSession() as session:
        transport = CnsTransport(settings, platform.url + "/api/v9", session)
        answer = await transport.deposit("3f2b8c1e-6d4a-4b7e-9c2d-1a5e8f7b6c3d", b"<n/>")
    assert answer.status == 200 and platform.seen[0][0] == "practice-1234"
    assert platform.token_fetches == (1 if mode == "oauth2" else 0)
