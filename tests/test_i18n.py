"""French and German: the catalogs are complete and current, the language is chosen as
documented, and the API answers a problem in the caller's language."""

from __future__ import annotations

import json
import os
import re
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


def _sidecar(env: dict[str, str], locale: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A ``sidecar`` command in *locale* (no other LANG/LC_* of this machine)."""
    clean = {k: v for k, v in env.items() if not k.startswith(("LC_", "LANG"))}
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**clean, "LANG": locale, "COLUMNS": "120"},
    )


@pytest.mark.parametrize(
    ("locale", "expected", "english"),
    [
        (
            "fr_LU.UTF-8",
            ["emplacement ", ": jeton '", "expire le ", "émis par ", "certificat d'autorité"],
            ["expires", "issued by", "CA certificate", "not initialized"],
        ),
        (
            "de_LU.UTF-8",
            ["Steckplatz ", ": Token '", "läuft ab am ", "ausgestellt von ", "CA-Zertifikat"],
            ["expires", "issued by", "CA certificate", "not initialized"],
        ),
    ],
)
def test_setup_list_speaks_the_os_locale(
    tmp_path: Path, softhsm: Any, locale: str, expected: list[str], english: list[str]
) -> None:
    """What practice IT staff read to pick the physician's card: ``setup --list``."""
    env = {**os.environ, "SIDECAR_HOME": str(tmp_path), "SOFTHSM2_CONF": str(softhsm.conf)}
    result = _sidecar(env, locale, "setup", "--list", "--module", str(softhsm.module))
    assert result.returncode == 0, result.stderr
    for text in expected:
        assert text in result.stdout, f"{text!r} not in:\n{result.stdout}"
    for text in english:
        assert text not in result.stdout, f"{text!r} left in English:\n{result.stdout}"
    # "slot" may be in a reader's own description ("SoftHSM slot ID 0x3"), not ours.
    assert not re.search(r"^\s+slot \d", result.stdout, re.MULTILINE), result.stdout
    # Dates as Luxembourg writes them in that language.
    separator = "/" if locale.startswith("fr") else "."
    assert f"{separator}20" in result.stdout


def test_setup_flag_errors_speak_the_os_locale(tmp_path: Path) -> None:
    """``setup --non-interactive`` names what is missing, in the person's language."""
    env = {**os.environ, "SIDECAR_HOME": str(tmp_path)}
    args = ("setup", "--non-interactive", "--no-key", "--no-cns")
    french = _sidecar(env, "fr_LU.UTF-8", *args)
    assert french.returncode == 2
    assert "aucune autorité d'horodatage indiquée : donnez --tsa-url" in french.stderr
    assert "rien n'a été écrit" in french.stderr, french.stderr
    german = _sidecar(env, "de_LU.UTF-8", *args)
    assert "kein Zeitstempeldienst angegeben: geben Sie --tsa-url" in german.stderr, german.stderr


def test_cli_refusals_speak_the_os_locale(tmp_path: Path) -> None:
    """A port taken (French) and a home that cannot be made (German): one line each."""
    import socket

    env = {**os.environ, "SIDECAR_HOME": str(tmp_path / "home")}
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        taken = _sidecar(env, "fr_LU.UTF-8", "serve", "--port", str(port))
    assert taken.returncode == 1, taken.stderr
    line = taken.stderr.strip().splitlines()[-1]
    assert f"impossible d'écouter sur 127.0.0.1:{port} : le port est déjà occupé" in line, line
    assert "un autre sidecar tourne-t-il déjà ?" in line and "cannot listen" not in line

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    home = blocker / "home"  # under a file: no user, root included, can make it
    refused = _sidecar({**env, "SIDECAR_HOME": str(home)}, "de_LU.UTF-8", "serve")
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "ist nicht beschreibbar" in lines[0] and "Starten Sie sidecar als" in lines[0]
    assert "cannot write to" not in lines[0]


def test_progress_lines_speak_the_current_language() -> None:
    """The lines a batch signing writes to stderr, in French."""
    import io

    from sidecar.i18n import use
    from sidecar.progress import Progress

    ticks = iter(float(t) for t in range(100))
    stream = io.StringIO()
    use("fr")
    try:
        with Progress(4, "signature", unit="file", stream=stream, clock=lambda: next(ticks)) as p:
            for _ in range(3):
                p.advance(note="note.xml")
            p.advance(failed=True)
    finally:
        use("en")
    text = stream.getvalue()
    assert "signature : 1/4 fichier (25 %), 1,0/s, encore 3 s environ — note.xml" in text, text
    assert "signature : terminé : 4 fichiers en " in text and ", 1 en échec" in text, text
    assert "file" not in text and "done" not in text


async def test_stalled_body_408_in_the_callers_language(api_factory: Any) -> None:
    """A problem added with the HTTP hardening (408 body_timeout) comes back in French."""
    from sidecar.config import ServerSettings, Settings
    from tests.test_http_surface import stalled_body

    api = await api_factory(Settings(server=ServerSettings(body_timeout=1.0)))
    status, headers, body = await stalled_body(api, extra=b"Accept-Language: fr-LU, fr;q=0.9\r\n")
    assert (status, body["code"], headers["content-language"]) == (408, "body_timeout", "fr")
    assert body["title"] == "Délai de requête dépassé"
    assert body["detail"] == "le corps de la requête est bloqué : aucun octet reçu depuis 1 s"


async def test_problems_answered_before_the_middlewares_are_translated(api: Api) -> None:
    """An unknown ``Expect`` is refused before the middlewares run: German all the same."""
    response = await api.client.get(
        "/v1/health", headers={"Expect": "teapot", "Accept-Language": "de"}
    )
    body = await response.json()
    assert response.status == 417 and body["code"] == "expectation_failed"
    assert response.headers["Content-Language"] == "de"
    assert body["detail"] == "als Expect wird nur 100-continue verstanden"


def test_batch_refusals_are_marked_for_translation() -> None:
    """The batch route's refusals: the parameter's name filled into the translation."""
    from sidecar.api.batches import parse_documents
    from sidecar.api.problems import Problem

    with pytest.raises(Problem) as empty:
        parse_documents({"documents": []}, 10)
    assert empty.value.body()["detail"] == "documents: the batch is empty"
    assert empty.value.body(language="fr")["detail"] == "documents : le lot est vide"
    with pytest.raises(Problem) as kind:
        parse_documents({"documents": [{"kind": "odt"}]}, 10)
    assert kind.value.body(language="de")["detail"] == (
        "documents[0].kind: einer der Werte form, xml, pdf"
    )
    with pytest.raises(Problem) as many:
        parse_documents({"documents": [{}] * 3}, 2)
    assert many.value.body(language="fr")["detail"].startswith(
        "3 documents ; une autorisation en couvre au plus 2"
    )


async def test_parser_refusals_in_the_language_of_the_head(api_factory: Any) -> None:
    """431 and a 408 header_timeout come before aiohttp parsed the head: the
    Accept-Language is read from the head's first bytes."""
    import asyncio

    from sidecar.config import ServerSettings, Settings
    from tests.test_http_surface import address, exchange, parse_answer

    api = await api_factory(Settings(server=ServerSettings(header_timeout=1.0)))
    head = b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nAccept-Language: fr-LU,fr;q=0.9\r\n"
    status, headers, body = parse_answer(
        await exchange(api, head + b"X-Big: " + b"x" * 9000 + b"\r\n\r\n")
    )
    assert (status, body["code"], headers["content-language"]) == (431, "header_too_large", "fr")
    assert body["title"] == "En-têtes de requête trop volumineux"
    assert body["detail"] == "la ligne de requête ou une ligne d'en-tête dépasse 8190 octets"
    status, headers, body = parse_answer(await exchange(api, b"GARBAGE\r\n\r\n"))
    assert status == 400 and body["title"] == "Bad Request" and "content-language" not in headers

    reader, writer = await asyncio.open_connection(*address(api))
    writer.write(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nAccept-Language: de\r\n")
    answer = await asyncio.wait_for(reader.read(), 20)  # the head never ends
    writer.close()
    status, headers, body = parse_answer(answer)
    assert (status, body["code"], headers["content-language"]) == (408, "header_timeout", "de")
    assert body["detail"] == "die Kopfzeilen der Anfrage waren nach 1 s nicht vollständig"
