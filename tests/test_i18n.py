"""French and German: the catalogs are complete and current, the language is chosen as
documented, and the API answers a problem in the caller's language."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sidecar.i18n import (
    choose,
    format_date,
    format_relative,
    language_from_environment,
    negotiate,
    translations,
    web_messages,
)
from sidecar.i18n.catalogs import DOMAINS, TRANSLATED, extract, read_catalog
from tests.fixtures.daemon import Api, free_port


def _key(message: Any) -> Any:
    return message.id if isinstance(message.id, str) else tuple(message.id)


@pytest.mark.parametrize("domain", sorted(DOMAINS))
@pytest.mark.parametrize("language", TRANSLATED)
def test_every_sentence_is_translated_and_every_translation_used(
    domain: str, language: str
) -> None:
    used = {_key(m) for m in extract(domain) if m.id}
    catalog = read_catalog(language, domain)
    held = {_key(m) for m in catalog if m.id}
    assert used, f"nothing extracted for {domain}: the extraction is broken"
    assert not used - held, f"{language}/{domain}.po lacks {sorted(map(str, used - held))}"
    assert not held - used, f"{language}/{domain}.po keeps unused {sorted(map(str, held - used))}"
    assert not catalog.obsolete, f"{language}/{domain}.po keeps obsolete entries"
    for message in catalog:
        if not message.id:
            continue
        assert not message.fuzzy, f"{language}: fuzzy {message.id!r}"
        forms = [message.string] if isinstance(message.id, str) else list(message.string)
        assert forms and all(forms), f"{language}: untranslated {message.id!r}"
        # Placeholders survive translation: the same {names} in every form.
        ids = [message.id] if isinstance(message.id, str) else list(message.id)
        expected = {p for i in ids for p in _placeholders(i)}
        for form in forms:
            assert _placeholders(form) <= expected, f"{language}: {form!r} vs {message.id!r}"
            assert _placeholders(form) >= _placeholders(ids[0]) - {"n"}, (
                f"{language}: {form!r} drops a placeholder of {message.id!r}"
            )


def _placeholders(text: str) -> set[str]:
    import string

    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_catalogs_load_in_each_language() -> None:
    assert translations("fr").gettext("Forbidden") == "Interdit"
    assert translations("de").gettext("Forbidden") == "Verboten"
    assert translations("en").gettext("Forbidden") == "Forbidden"
    fee = web_messages("fr")["{n} fee note waiting, for {age}."]
    assert isinstance(fee, list) and "mémoires d'honoraires" in fee[1]
    assert "Honorarnote" in str(web_messages("de")["No fee note waiting to be sent to the CNS."])
    assert web_messages("en") == {}


def test_language_is_chosen_from_the_browser_the_os_and_the_configuration() -> None:
    assert negotiate("fr-LU,fr;q=0.9,en;q=0.8") == "fr"
    assert negotiate("lb-LU, de;q=0.7, fr;q=0.5") == "de"
    assert negotiate("en;q=0.2, de;q=0.9") == "de"
    assert negotiate("es, it") is None
    assert negotiate("fr;q=0") is None
    assert negotiate(None) is None
    assert language_from_environment({"LANG": "fr_LU.UTF-8"}) == "fr"
    assert language_from_environment({"LANG": "fr_LU.UTF-8", "LC_ALL": "de_LU.UTF-8"}) == "de"
    assert language_from_environment({"LC_MESSAGES": "de_DE@euro", "LANG": "fr_FR"}) == "de"
    assert language_from_environment({"LANG": "C.UTF-8"}) == "en"
    assert language_from_environment({}) == "en"
    assert choose("de", "fr") == "de"
    assert choose("auto", "fr") == "fr"
    assert choose("auto", None) == "en"


def test_dates_in_the_readers_locale() -> None:
    from datetime import date, timedelta

    assert format_date(date(2029, 11, 29), "fr") == "29/11/2029"
    assert format_date(date(2029, 11, 29), "de") == "29.11.2029"
    assert format_relative(timedelta(days=3 * 365 + 2), "fr") == "dans 3 ans"
    assert format_relative(timedelta(days=3 * 365 + 2), "de") == "in 3 Jahren"
    assert format_relative(timedelta(minutes=-4), "fr") == "il y a 4 minutes"


async def _problem(api: Api, path: str, **headers: str) -> tuple[int, dict[str, Any], Any]:
    response = await api.client.get(path, headers=headers)
    return response.status, await response.json(), response.headers


async def test_problem_in_the_callers_language(api: Api) -> None:
    """Same status and code; title and detail translated; Content-Language says which."""
    status, english, headers = await _problem(api, "/v1/keys")  # no token
    assert status == 401 and "Content-Language" not in headers
    assert english["title"] == "Unauthorized"
    assert english["detail"].startswith("this route needs Authorization")

    status, french, headers = await _problem(api, "/v1/keys", **{"Accept-Language": "fr-LU"})
    assert status == 401 and headers["Content-Language"] == "fr"
    assert french["code"] == english["code"] == "unauthorized"
    assert french["title"] == "Non authentifié"
    assert french["detail"] == (
        "cette route demande Authorization: Bearer <jeton> (voir default.token)"
    )

    # A template's parameters are filled into the translation.
    bad = {"Authorization": "Bearer nope"}
    wrong_scope = {"Authorization": f"Bearer {api.tokens['verifier']}"}
    status, german, headers = await _problem(
        api, "/v1/keys", **wrong_scope, **{"Accept-Language": "de-LU, fr;q=0.5"}
    )
    assert status == 403 and headers["Content-Language"] == "de"
    assert german["code"] == "forbidden" and german["title"] == "Verboten"
    assert german["detail"].startswith("dem Client 'verifier' fehlt die Berechtigung")
    status, french, _ = await _problem(api, "/v1/keys", **bad, **{"Accept-Language": "fr"})
    assert (status, french["detail"]) == (401, "jeton inconnu")

    status, french, _ = await _problem(api, "/v1/nowhere", **{"Accept-Language": "fr"})
    assert status == 404 and french["code"] == "not_found"
    assert french["detail"] == "aucune route GET /v1/nowhere"


async def test_problem_without_a_translated_detail_stays_english(api: Api) -> None:
    """A detail built without a template keeps its English text; the title is French."""
    response = await api.client.post(
        "/v1/timestamps",
        data=b"",
        headers={**api.auth(), "Content-Type": "application/json", "Accept-Language": "fr"},
    )
    body = await response.json()
    assert response.status == 400 and response.headers["Content-Language"] == "fr"
    assert (body["code"], body["title"]) == ("bad_parameter", "Requête incorrecte")
    assert body["detail"].startswith("body: send an RFC 3161 TimeStampReq")


def _doctor(home: Path, language_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``sidecar doctor`` with nothing running on its port, in the given locale."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG"))}
    return subprocess.run(
        [sys.executable, "-m", "sidecar", "doctor", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "SIDECAR_HOME": str(home), **language_env},
    )


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        (
            "fr_LU.UTF-8",
            ["ÉCHEC", "rien n'écoute sur 127.0.0.1:", "-> démarrez-le : sous Linux", "EN PANNE :"],
        ),
        (
            "de_LU.UTF-8",
            ["FEHLER", "auf 127.0.0.1:", "lauscht nichts", "-> starten Sie ihn:", "GESTÖRT:"],
        ),
        ("C.UTF-8", ["FAIL", "nothing listens on 127.0.0.1:", "-> start it: Linux", "BROKEN:"]),
    ],
)
def test_doctor_speaks_the_os_locale(tmp_path: Path, locale: str, expected: list[str]) -> None:
    result = _doctor(tmp_path / "home", {"LANG": locale})
    assert result.returncode == 1, result.stderr
    for text in expected:
        assert text in result.stdout, f"{text!r} not in:\n{result.stdout}"
    if not locale.startswith("C"):
        for english in ("nothing listens", "BROKEN", "start it:", "is private", "MiB free for"):
            assert english not in result.stdout, f"{english!r} left in English:\n{result.stdout}"


def test_configured_language_overrides_the_os_locale(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "sidecar.toml").write_text('[ui]\nlanguage = "de"\n')
    (home / "sidecar.toml").chmod(0o600)
    result = _doctor(home, {"LC_ALL": "fr_LU.UTF-8", "LANG": "fr_LU.UTF-8"})
    assert "GESTÖRT:" in result.stdout and "EN PANNE" not in result.stdout, result.stdout


def test_setup_speaks_the_os_locale(tmp_path: Path) -> None:
    """``sidecar setup`` refuses to overwrite a file, in the person's language."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "sidecar.toml").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG"))}
    result = subprocess.run(
        [sys.executable, "-m", "sidecar", "setup", "--non-interactive", "--no-key"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "SIDECAR_HOME": str(home), "LANG": "fr_LU.UTF-8"},
    )
    assert result.returncode == 2
    assert "existe ; rien n'a été écrit (--force le remplace)" in result.stderr, result.stderr


def test_key_errors_from_below_the_api_are_translated_by_reason() -> None:
    """A locked key's detail is made by the key layer (English, precise); another
    language gets the sentence for its reason, with the same code and members."""
    from datetime import UTC, datetime

    import sidecar.api.signing_keys  # noqa: F401 - registers the key error mappers
    from sidecar.api.problems import problem_for
    from sidecar.keys import CertificateNotValid, KeyLocked

    locked = problem_for(
        KeyLocked("pin_incorrect", "token 'Dr X' refused the PIN", key_id="dr-x", retries_left=2)
    )
    assert locked is not None
    english, french = locked.body(), locked.body(language="fr")
    assert english["detail"] == "token 'Dr X' refused the PIN"
    assert french["detail"] == "le code PIN enregistré pour la clé de signature est erroné"
    assert french["title"] == "Verrouillé" and english["title"] == "Locked"
    assert {k: v for k, v in french.items() if k not in ("title", "detail")} == {
        k: v for k, v in english.items() if k not in ("title", "detail")
    }
    expired = problem_for(
        CertificateNotValid(
            "expired",
            "the certificate of key 'dr-x' expired on 2026-01-31",
            key_id="dr-x",
            not_before=datetime(2023, 2, 1, tzinfo=UTC),
            not_after=datetime(2026, 1, 31, tzinfo=UTC),
        )
    )
    assert expired is not None
    assert (
        expired.body(language="de")["detail"]
        == "das Signaturzertifikat ist am 31.01.2026 abgelaufen"
    )
    assert expired.body()["detail"] == "the certificate of key 'dr-x' expired on 2026-01-31"


async def test_status_page_catalog_follows_the_browser_unless_configured(
    api_factory: Any,
) -> None:
    from sidecar.config import Settings, UiSettings

    async def catalog(api: Api, accept: str) -> tuple[str, dict[str, Any], Any]:
        response = await api.client.get("/assets/messages.js", headers={"Accept-Language": accept})
        text = await response.text()
        assert text.startswith("var sidecarMessages = ") and text.rstrip().endswith(";")
        body = json.loads(text.removeprefix("var sidecarMessages = ").rstrip().rstrip(";"))
        return body["language"], body["messages"], response.headers

    browser = await api_factory()
    language, messages, headers = await catalog(browser, "fr-LU,fr;q=0.9,en;q=0.5")
    assert language == "fr" and messages["Everything works."] == "Tout fonctionne."
    assert headers["Content-Language"] == "fr" and "Accept-Language" in headers["Vary"]
    assert (await catalog(browser, "es"))[:2] == ("en", {})

    configured = await api_factory(Settings(ui=UiSettings(language="de")))
    language, messages, _ = await catalog(configured, "fr-LU,fr")
    assert language == "de" and messages["Everything works."] == "Alles funktioniert."
