"""Keeping the catalogs: extract the marked sentences with Babel, merge them into the
``.po`` of every language. ``python -m sidecar.i18n.catalogs`` after changing a
sentence; then translate what is new (``msgstr ""``) or marked ``fuzzy``.
``tests/test_i18n.py`` extracts the same way and fails on a sentence missing from a
catalog, untranslated, fuzzy, or no longer used.
"""

from __future__ import annotations

from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from .. import __version__

__all__ = ["DOMAINS", "LOCALE_DIR", "extract", "po_path", "read_catalog", "update"]

PACKAGE = Path(__file__).resolve().parent.parent
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
#: What each domain is extracted from (Babel method maps), relative to ``sidecar/``.
DOMAINS = {
    # The sandbox is a developer's tool, English only; but for what its start-up says
    # when it cannot serve (a port taken), which practice IT staff read too.
    "sidecar": [
        ("**/sandbox/services.py", "python"),
        ("**/sandbox/**.py", "ignore"),
        ("**.py", "python"),
    ],
    "web": [("web/status.js", "javascript"), ("web/common.js", "javascript")],
}
KEYWORDS = {"_": None, "N_": None, "ngettext": (1, 2)}
TRANSLATED = ("fr", "de")
_TEAMS = {"fr": "français (Luxembourg)", "de": "Deutsch (Luxemburg)"}


def extract(domain: str) -> Catalog:
    """Every marked sentence of *domain*, as a template (no translations)."""
    template = Catalog(project="sidecar", domain=domain, fuzzy=False)
    for filename, lineno, message, comments, context in extract_from_dir(
        PACKAGE, DOMAINS[domain], keywords=KEYWORDS, comment_tags=("TRANSLATORS:",)
    ):
        template.add(
            message,
            None,
            [(f"sidecar/{filename}", lineno)],
            auto_comments=comments,
            context=context,
        )
    return template


def po_path(language: str, domain: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{domain}.po"


def read_catalog(language: str, domain: str) -> Catalog:
    path = po_path(language, domain)
    if not path.exists():
        return Catalog(locale=language, domain=domain, project="sidecar")
    with path.open("rb") as handle:
        return read_po(handle, locale=language, domain=domain)


def update() -> None:
    """Merge the extracted sentences into every ``.po``; drop those no longer used."""
    for domain in DOMAINS:
        template = extract(domain)
        for language in TRANSLATED:
            catalog = read_catalog(language, domain)
            catalog.update(template, no_fuzzy_matching=True)
            catalog.obsolete.clear()
            catalog.version = __version__
            catalog.msgid_bugs_address = ""
            catalog.last_translator = "sidecar"
            catalog.language_team = _TEAMS[language]
            path = po_path(language, domain)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as handle:
                write_po(handle, catalog, width=100, omit_header=False, sort_output=False)


if __name__ == "__main__":
    update()
