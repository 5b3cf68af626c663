"""Per-client key access: a client limited to some keys is refused the others, on every
route that chooses a key, and is shown only its own in ``GET /v1/keys``."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable

import pytest

from sidecar.api.appkeys import SERVICES
from sidecar.clients import ClientStore, Scope, TokenError
from sidecar.keys.access import KeyAccess, KeyNotAllowed, choose_key
from sidecar.sandbox import SandboxPKI
from tests.fixtures.cns import SimulatorThread, sandbox_cns_settings, unsigned_fee_note
from tests.fixtures.daemon import Api
from tests.fixtures.xades import FORM

PROBLEM = "application/problem+json"
XML = {"Content-Type": "application/xml"}
PDF = {"Content-Type": "application/pdf"}
SIGN = frozenset({Scope.SIGN, Scope.VERIFY, Scope.FORWARD})


def signatures(api: Api) -> float:
    """Every signature the daemon made (the ``sidecar_signatures`` counter, all labels)."""
    registry = api.client.app[SERVICES].metrics.registry
    return sum(
        sample.value
        for metric in registry.collect()
        if metric.name == "sidecar_signatures"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def dr_ec(sandbox_api: Api) -> dict[str, str]:
    """A physician's workstation client: the EC key only (the default is the RSA one)."""
    return bearer(sandbox_api.store.create("dr-ec", SIGN, keys=frozenset({"sandbox-ec"})))


async def refused(response, key: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status == 403, await response.text()
    assert response.content_type == PROBLEM
    body = await response.json()
    assert body["code"] == "key_not_allowed"
    assert body["key"] == key
    assert "X-Signature-Level" not in response.headers


async def test_a_client_is_refused_a_key_not_its_own_on_every_route(
    sandbox_api: Api, dr_ec: dict[str, str], fee_note_pdf: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = sandbox_api.client
    before = signatures(sandbox_api)
    # Every route that chooses a key, with a key that exists and one that does not:
    # both 403, so that a client cannot probe which keys the daemon holds.
    for key in ("sandbox-rsa", "nobody"):
        await refused(
            await client.post(f"/v1/xml/sign?key={key}", data=FORM, headers={**dr_ec, **XML}),
            key,
        )
        await refused(
            await client.post(
                f"/v1/pdf/sign?key={key}&level=B-B", data=fee_note_pdf, headers={**dr_ec, **PDF}
            ),
            key,
        )
        form = "/v1/forms/fee-note/sign?key=" + key
        await refused(await client.post(form, data=FORM, headers={**dr_ec, **XML}), key)
        document = {"name": "a", "kind": "xml", "xml": base64.b64encode(FORM).decode()}
        batch = {"documents": [document]}
        await refused(await client.post(f"/v1/batches?key={key}", json=batch, headers=dr_ec), key)
    assert signatures(sandbox_api) == before
    # The refusal is no server error, and the client's token is in no log line.
    token = dr_ec["Authorization"].split()[1]
    assert token not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_client_of_one_key_gets_it_without_naming_it(
    sandbox_api: Api, dr_ec: dict[str, str], fee_note_pdf: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sidecar")
    response = await sandbox_api.client.post(
        "/v1/pdf/sign?level=B-B", data=fee_note_pdf, headers={**dr_ec, **PDF}
    )
    assert response.status == 200, await response.text()
    assert "with key sandbox-ec" in caplog.text
    # Its own key named: signed too; a client without a list (today's) may use any.
    response = await sandbox_api.client.post(
        "/v1/pdf/sign?level=B-B&key=sandbox-ec", data=fee_note_pdf, headers={**dr_ec, **PDF}
    )
    assert response.status == 200
    response = await sandbox_api.client.post(
        "/v1/pdf/sign?level=B-B&key=sandbox-ec",
        data=fee_note_pdf,
        headers={**sandbox_api.auth("signer"), **PDF},
    )
    assert response.status == 200


async def test_a_client_of_several_keys_none_default_must_name_one(sandbox_api: Api) -> None:
    token = sandbox_api.store.create("desk", SIGN, keys=frozenset({"sandbox-ec", "dr-b"}))
    response = await sandbox_api.client.post(
        "/v1/xml/sign?level=B-B", data=FORM, headers={**bearer(token), **XML}
    )
    assert response.status == 400
    assert response.content_type == PROBLEM
    assert (await response.json())["code"] == "key_required"


async def test_the_key_list_shows_only_the_clients_keys(
    sandbox_api: Api, dr_ec: dict[str, str]
) -> None:
    response = await sandbox_api.client.get("/v1/keys", headers=dr_ec)
    assert response.status == 200
    assert [k["id"] for k in (await response.json())["keys"]] == ["sandbox-ec"]
    response = await sandbox_api.client.get("/v1/keys", headers=sandbox_api.auth("signer"))
    assert {k["id"] for k in (await response.json())["keys"]} == {"sandbox-rsa", "sandbox-ec"}


async def test_the_cns_deposit_of_an_unsigned_fee_note_follows_the_clients_keys(
    api_factory: Callable[..., Awaitable[Api]],
    sandbox_services: SandboxPKI,
    real_cns_simulator: SimulatorThread,
    fee_note_pdf: bytes,
) -> None:
    api = await api_factory(
        sandbox_cns_settings(real_cns_simulator.url), sandbox_pki=sandbox_services
    )
    # Allowed two keys, the default (which the fee-note recipe takes) not among them.
    token = api.store.create("desk", SIGN, keys=frozenset({"sandbox-ec", "dr-b"}))
    note_uuid = str(uuid.uuid4())
    response = await api.client.post(
        "/v1/cns/fee-notes",
        data=unsigned_fee_note(note_uuid, fee_note_pdf),
        headers={**bearer(token), **XML},
    )
    assert response.status == 400, await response.text()
    assert (await response.json())["code"] == "key_required"
    listed = await api.client.get(f"/v1/cns/messages/{note_uuid}", headers=bearer(token))
    assert listed.status == 404  # nothing accepted, nothing signed
    assert signatures(api) == 0


def test_choose_key() -> None:
    one = KeyAccess("dr-a", frozenset({"a"}))
    two = KeyAccess("desk", frozenset({"a", "b"}))
    assert choose_key(None, None, "d") == "d"
    assert choose_key(KeyAccess("any"), "x", "d") == "x"
    assert choose_key(one, None, "d") == "a"
    assert choose_key(two, None, "b") == "b"
    with pytest.raises(KeyNotAllowed) as refused_:
        choose_key(one, "b", "d")
    assert refused_.value.reason == "not_allowed"
    with pytest.raises(KeyNotAllowed) as required:
        choose_key(two, None, "d")
    assert required.value.reason == "key_required"


def test_clients_file_keeps_the_keys_and_reads_old_entries(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = ClientStore(tmp_path / "clients.json")
    store.create("old", frozenset({Scope.SIGN}))
    store.create("dr-a", frozenset({Scope.SIGN}), keys=frozenset({"dr-a"}), rate_limit="5/s")
    text = (tmp_path / "clients.json").read_text()
    assert '"keys"' in text and text.count('"keys"') == 1  # absent for "old": every key
    again = {c.name: c for c in ClientStore(tmp_path / "clients.json").clients()}
    assert again["old"].keys is None
    assert again["dr-a"].keys == frozenset({"dr-a"})
    assert again["dr-a"].public()["keys"] == ["dr-a"]
    with pytest.raises(TokenError):
        store.create("x", frozenset({Scope.SIGN}), keys=frozenset())
    with pytest.raises(TokenError):
        store.create("y", frozenset({Scope.SIGN}), rate_limit="fast")


def test_token_commands_take_keys_certificate_and_rate(tmp_path) -> None:  # type: ignore[no-untyped-def]
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "SIDECAR_HOME": str(tmp_path)}
        return subprocess.run(
            [sys.executable, "-m", "sidecar", "token", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )

    fingerprint = ":".join(["AB"] * 32)
    made = cli(
        "create", "ws-12", "--scope", "sign", "--keys", "dr-a,dr-b", "--keys", "dr-c",
        "--cert-fingerprint", f"sha256 Fingerprint={fingerprint}", "--rate-limit", "5/s",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert cli("create", "plain", "--scope", "sign").returncode == 0
    listed = {c["name"]: c for c in json.loads(cli("list", "--json").stdout)}
    assert listed["ws-12"]["keys"] == ["dr-a", "dr-b", "dr-c"]
    assert listed["ws-12"]["cert_sha256"] == "ab" * 32
    assert listed["ws-12"]["rate_limit"] == "5/s"
    assert listed["plain"]["keys"] is None  # every key
    text = cli("list").stdout
    assert "keys=dr-a,dr-b,dr-c" in text and "rate=5/s" in text and "keys=*" in text
    bad = cli("create", "x", "--scope", "sign", "--cert-fingerprint", "12:34")
    assert bad.returncode == 2 and "SHA-256" in bad.stderr
    taken = cli("create", "y", "--scope", "sign", "--cert-fingerprint", fingerprint)
    assert taken.returncode == 2 and "another client" in taken.stderr


def test_a_broken_entry_refuses_its_client(tmp_path, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    store = ClientStore(tmp_path / "clients.json")
    token = store.create("ws", frozenset({Scope.SIGN}), rate_limit="5/s")
    raw = json.loads((tmp_path / "clients.json").read_text())
    raw["clients"]["ws"]["rate_limit"] = "lots"  # hand-edited
    (tmp_path / "clients.json").write_text(json.dumps(raw))
    assert ClientStore(tmp_path / "clients.json").authenticate(token) is None
    assert "'ws' is unusable" in caplog.text
