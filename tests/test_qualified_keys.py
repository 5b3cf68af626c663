"""Keys with CKA_ALWAYS_AUTHENTICATE on a real SoftHSM2 token: a context-specific login
per signature, from the PIN given for the operation, under the refused-PIN and FINAL_TRY
guards; and the PIN header of the signing routes."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pkcs11
import pytest
from pkcs11 import Attribute, Mechanism, ObjectClass, TokenFlag

from sidecar.config import SandboxSettings, Settings
from sidecar.keys import Authorisation, KeyConfig, KeyLocked, authorised
from sidecar.keys.pkcs11_module import load_module
from sidecar.keys.pkcs11_token import Pkcs11Signer
from sidecar.sandbox import SandboxPKI
from tests.fixtures.daemon import Api
from tests.fixtures.qualified import QUALIFIED_LABEL, qualified_key  # noqa: F401
from tests.fixtures.softhsm import (
    MAIN_PIN,
    MAIN_TOKEN,
    PINS_PIN,
    PINS_TOKEN,
    WRONG_PIN,
    KeyPki,
    SoftHsm,
    verify_signature,
)


class FinalTryLater(Pkcs11Signer):
    """SoftHSM never sets CKF_USER_PIN_FINAL_TRY (no retry limit): this seam adds it to
    the real token's flags once ``final_try`` is set; everything else is the real token."""

    final_try = False

    def _token_flags(self, token: pkcs11.Token) -> TokenFlag:
        flags = super()._token_flags(token)
        return flags | TokenFlag.USER_PIN_FINAL_TRY if self.final_try else flags


@pytest.fixture
def qualified(qualified_key: KeyConfig) -> Iterator[Pkcs11Signer]:  # noqa: F811
    signer = FinalTryLater(qualified_key)
    yield signer
    signer.close()


def test_softhsm_enforces_the_context_specific_login(
    softhsm: SoftHsm,
    qualified_key: KeyConfig,  # noqa: F811
) -> None:
    """What the rest relies on: SoftHSM2 refuses C_Sign without the context login."""
    token = load_module(softhsm.module).lib.get_token(token_label=MAIN_TOKEN)
    try:
        session = token.open(user_pin=MAIN_PIN)
    except pkcs11.exceptions.UserAlreadyLoggedIn:
        session = token.open()
    try:
        (key,) = session.get_objects(
            {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: QUALIFIED_LABEL}
        )
        assert key[Attribute.ALWAYS_AUTHENTICATE] is True
        with pytest.raises(pkcs11.exceptions.UserNotLoggedIn):
            key.sign(b"x", mechanism=Mechanism.SHA256_RSA_PKCS)
        assert len(key.sign(b"x", mechanism=Mechanism.SHA256_RSA_PKCS, pin=MAIN_PIN)) == 256
    finally:
        session.close()


async def test_fifty_signatures_with_one_pin(
    qualified: Pkcs11Signer, sandbox_pki: SandboxPKI
) -> None:
    authorisation = Authorisation(MAIN_PIN)
    with authorised(authorisation):
        for n in range(50):
            data = f"fee note {n}".encode()
            signature = await qualified.sign(data)
            verify_signature(qualified.crypto_certificate, data, signature)
        assert qualified.always_authenticate
        assert qualified.context_logins == 50  # one context-specific login per signature
    # The authorisation ended with the block: the PIN is gone, nothing more is signed.
    assert "closed" in repr(authorisation) and MAIN_PIN not in repr(authorisation)
    with authorised(authorisation), pytest.raises(KeyLocked) as ended:
        await qualified.sign(b"after")
    assert ended.value.reason == "pin_missing"
    # No authorisation at all: the key does not sign.
    with pytest.raises(KeyLocked) as none:
        await qualified.sign(b"no pin")
    assert none.value.reason == "pin_missing"
    assert qualified.context_logins == 50


async def test_a_stored_pin_opens_the_session_but_signs_nothing(
    qualified_key: KeyConfig,  # noqa: F811
) -> None:
    config = dataclasses.replace(
        qualified_key, id="qualified-config", pin_source="config", pin=MAIN_PIN
    )
    signer = Pkcs11Signer(config)
    try:
        with pytest.raises(KeyLocked) as caught:
            await signer.sign(b"x")
        assert caught.value.reason == "pin_missing"
        assert signer.always_authenticate and signer.context_logins == 0
        with authorised(Authorisation(MAIN_PIN)):
            await signer.sign(b"x")
        assert signer.context_logins == 1
    finally:
        signer.close()


async def test_a_refused_context_pin_is_never_sent_again(
    qualified: Pkcs11Signer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with authorised(Authorisation(MAIN_PIN)):
        await qualified.sign(b"opens the session")
    assert qualified.context_logins == 1
    wrong = Authorisation(WRONG_PIN)
    with authorised(wrong, close=False), pytest.raises(KeyLocked) as first:
        await qualified.sign(b"x")
    assert first.value.reason == "pin_incorrect"
    assert qualified.context_logins == 2
    # The same authorisation, and a new one with the same PIN: neither reaches the token.
    with authorised(wrong), pytest.raises(KeyLocked) as again:
        await qualified.sign(b"x")
    with authorised(Authorisation(WRONG_PIN)), pytest.raises(KeyLocked) as second:
        await qualified.sign(b"x")
    assert again.value.reason == second.value.reason == "pin_incorrect"
    assert "not presented again" in second.value.detail
    assert qualified.context_logins == 2
    # The right PIN signs again (and resets SoftHSM's failure count).
    with authorised(Authorisation(MAIN_PIN)):
        await qualified.sign(b"y")
    assert qualified.context_logins == 3
    for text in [caplog.text, *(str(e.value) for e in (first, again, second))]:
        assert WRONG_PIN not in text and MAIN_PIN not in text


async def test_final_try_is_never_tried(qualified: Pkcs11Signer) -> None:
    with authorised(Authorisation(MAIN_PIN)):
        await qualified.sign(b"opens the session")
    qualified.final_try = True
    authorisation = Authorisation(MAIN_PIN)
    with authorised(authorisation), pytest.raises(KeyLocked) as caught:
        await qualified.sign(b"x")
    assert caught.value.reason == "pin_final_try" and caught.value.retries_left == 1
    assert authorisation.logins == 0  # the PIN was not even taken out
    assert qualified.context_logins == 1


@pytest.fixture
async def qualified_api(
    api_factory: Callable[..., Awaitable[Api]],
    sandbox_services: SandboxPKI,
    qualified_key: KeyConfig,  # noqa: F811
) -> Api:
    settings = Settings(sandbox=SandboxSettings(softhsm=False), keys=[qualified_key])
    return await api_factory(settings, sandbox_pki=sandbox_services)


async def test_routes_take_the_pin_per_request(
    qualified_api: Api, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client, auth = qualified_api.client, qualified_api.auth("signer")
    xml = b"<note>qualified</note>"
    headers = {**auth, "Content-Type": "application/xml"}

    # The caller can tell the key wants a PIN with each operation; waiting for one is
    # its normal state, not a health problem.
    response = await client.get("/v1/keys", headers=auth)
    (key,) = (await response.json())["keys"]
    assert key["pin_per_operation"] is True and key["unlocked"] is False
    response = await client.get("/v1/health", headers=qualified_api.auth("all"))
    checks = {c["name"]: c for c in (await response.json())["checks"]}
    assert checks["keys"]["status"] == "ok", checks["keys"]

    response = await client.post("/v1/xml/sign?level=B-B", data=xml, headers=headers)
    assert response.status == 423
    assert (await response.json())["reason"] == "pin_missing"

    good = {**headers, "X-Sidecar-PIN": MAIN_PIN}
    for _ in range(3):
        response = await client.post("/v1/xml/sign?level=B-B", data=xml, headers=good)
        assert response.status == 200, await response.text()

    bad = {**headers, "X-Sidecar-PIN": WRONG_PIN}
    answers = []
    for _ in range(2):
        response = await client.post("/v1/xml/sign?level=B-B", data=xml, headers=bad)
        assert response.status == 423
        answers.append(await response.text())
        assert '"pin_incorrect"' in answers[-1]
    assert "not presented again" in answers[1]

    response = await client.post("/v1/xml/sign?level=B-B", data=xml, headers=good)
    assert response.status == 200

    response = await client.post(
        "/v1/xml/sign?level=B-B", data=xml, headers={**headers, "X-Sidecar-PIN": ""}
    )
    assert response.status == 400
    answers.append(await response.text())

    for text in [caplog.text, *answers]:
        assert MAIN_PIN not in text and WRONG_PIN not in text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert MAIN_PIN.encode() not in content and WRONG_PIN.encode() not in content, path


async def test_request_pin_without_always_authenticate(softhsm: SoftHsm, key_pki: KeyPki) -> None:
    """``pin_source = "request"`` on an ordinary key: the session serves the operations
    that bring the PIN it was opened with; another PIN is checked by the token."""
    config = KeyConfig(
        id="hsm-request",
        backend="pkcs11",
        module=softhsm.module,
        token_label=PINS_TOKEN,
        key_label="pins",
        pin_source="request",
    )
    signer = Pkcs11Signer(config)
    try:
        with pytest.raises(KeyLocked) as none:
            await signer.sign(b"x")
        assert none.value.reason == "pin_missing"
        with authorised(Authorisation(PINS_PIN)):
            for n in range(3):
                verify_signature(
                    key_pki.leaves["pins"].certificate, b"%d" % n, await signer.sign(b"%d" % n)
                )
        assert not signer.always_authenticate and signer.pin_per_operation
        # The session is open, but an operation with another PIN does not ride on it.
        with authorised(Authorisation(WRONG_PIN)), pytest.raises(KeyLocked) as wrong:
            await signer.sign(b"x")
        assert wrong.value.reason == "pin_incorrect"
        with pytest.raises(KeyLocked) as after:  # and none at all, still nothing
            await signer.sign(b"x")
        assert after.value.reason == "pin_missing"
        with authorised(Authorisation(PINS_PIN)):
            await signer.sign(b"y")  # the right one again (resets SoftHSM's count)
    finally:
        signer.close()
