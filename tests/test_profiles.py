"""Profiles: the bundled ones load, their samples pass, XSD errors carry line and column."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from lxml import etree

from sidecar.signing.pdf_checks import inspect_pdf, pdfa_problems
from sidecar.signing.profiles import (
    BUNDLED_PROFILE_DIR,
    ProfileError,
    ProfileRegistry,
    load_profile,
    validate_xml,
)
from sidecar.signing.report import Level
from sidecar.signing.xml_safety import parse_xml
from tests.fixtures.pades import load_make_samples

EXPECTED = {
    "fee-note",
    "pid-simulation",
    "pid-validation",
    "pid-contestation",
    "ecit",
    "eordonnance",
}


def _filled(profile_name: str) -> tuple[etree._ElementTree, bytes]:
    registry = ProfileRegistry.load([BUNDLED_PROFILE_DIR])
    profile = registry.get(profile_name)
    assert profile is not None
    xml = next(s for s in profile.samples if s.suffix == ".xml")
    parsed = parse_xml(xml.read_bytes())
    (element,) = parsed.tree.xpath(profile.uuid_xpath, namespaces=dict(profile.namespaces))
    element.text = str(uuid.uuid4())
    return parsed.tree, parsed.data


def test_bundled_profiles() -> None:
    registry = ProfileRegistry.load([BUNDLED_PROFILE_DIR])
    assert {p.name for p in registry} == EXPECTED
    fee_note = registry.get("fee-note")
    assert fee_note is not None
    assert fee_note.standin and fee_note.require_pdfa
    assert (fee_note.pdf_level, fee_note.xml_level) == (Level.B_B, Level.B_LT)
    assert fee_note.cns_operation == "deposit"
    for kind in ("simulation", "validation", "contestation"):
        pid = registry.get(f"pid-{kind}")
        assert pid is not None and pid.pdf_xpath is None and pid.cns_operation == f"pid_{kind}"
    # Stand-ins say so, in the XSD itself.
    for profile in registry:
        assert profile.standin
        assert "STAND-IN SCHEMA" in profile.xsd.read_text()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_samples_pass_once_the_uuid_is_filled(name: str) -> None:
    tree, data = _filled(name)
    profile = ProfileRegistry.load([BUNDLED_PROFILE_DIR]).get(name)
    assert profile is not None
    assert validate_xml(tree, profile, data) == []


def test_empty_uuid_is_a_violation_with_position() -> None:
    profile = ProfileRegistry.load([BUNDLED_PROFILE_DIR]).get("fee-note")
    assert profile is not None
    parsed = parse_xml((BUNDLED_PROFILE_DIR / "samples" / "fee-note.xml").read_bytes())
    (error,) = validate_xml(parsed.tree, profile, parsed.data)
    line = parsed.data.decode().splitlines()[error.line - 1]
    assert line[error.column - 1 :].startswith("<UUID>")
    assert "UUID" in error.message


def test_every_error_has_line_column_message() -> None:
    profile = ProfileRegistry.load([BUNDLED_PROFILE_DIR]).get("fee-note")
    assert profile is not None
    tree, _ = _filled("fee-note")
    data = etree.tostring(tree, xml_declaration=True, encoding="UTF-8")
    bad = (
        data.replace(b"<Matricule>1980010112345</Matricule>", b"<Matricule>12AB</Matricule>")
        .replace(b"<Quantity>1</Quantity>", b"<Quantity>zero</Quantity>", 1)
        .replace(b"<Total", b"<Totale", 1)
        .replace(b"</Total>", b"</Totale>", 1)
    )
    parsed = parse_xml(bad)
    errors = validate_xml(parsed.tree, profile, parsed.data)
    assert len(errors) == 3, errors
    lines = bad.decode().splitlines()
    for error, tag in zip(errors, ("<Matricule>", "<Quantity>", "<Totale"), strict=True):
        assert lines[error.line - 1][error.column - 1 :].startswith(tag), (error, tag)
        assert error.message
    assert errors[0].as_json().keys() == {"line", "column", "message"}


def test_wrong_root_is_reported() -> None:
    profile = ProfileRegistry.load([BUNDLED_PROFILE_DIR]).get("fee-note")
    assert profile is not None
    parsed = parse_xml(b"<?xml version='1.0'?>\n<Other/>")
    (error,) = validate_xml(parsed.tree, profile, parsed.data)
    assert error.line == 2 and "FeeNote" in error.message


def test_configured_directory_replaces_a_bundled_profile(tmp_path: Path) -> None:
    # What a vendor does with the CNS's XSD: same name, another schema.
    (tmp_path / "cns.xsd").write_text(
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:cns:x" '
        'elementFormDefault="qualified"><xs:element name="Note" type="xs:string"/></xs:schema>'
    )
    (tmp_path / "fee-note.toml").write_text(
        'name = "fee-note"\nxsd = "cns.xsd"\nroot = "{urn:cns:x}Note"\ncns_operation = "deposit"\n'
        '[xml]\nlevel = "B-LT"\n'
    )
    registry = ProfileRegistry.load([BUNDLED_PROFILE_DIR, tmp_path])
    profile = registry.get("fee-note")
    assert profile is not None and not profile.standin and profile.xsd == tmp_path / "cns.xsd"
    assert len(registry) == len(EXPECTED)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('name = "other"\nxsd = "x.xsd"\nroot = "r"', "must match the file name"),
        ('xsd = "missing.xsd"\nroot = "r"', "cannot read the XSD"),
        ('xsd = "x.xsd"\nroot = "r"\nsurprise = 1', "unknown key"),
        ('xsd = "x.xsd"\nroot = "r"\n[xml]\nlevel = "B-Z"', "xml.level"),
        ('xsd = "x.xsd"\nroot = "r"\n[uuid]\nxpath = "///["', "not a valid XPath"),
        ('xsd = "x.xsd"\nroot = "r"\ncns_operation = "mail"', "cns_operation"),
    ],
)
def test_broken_profiles_are_refused(tmp_path: Path, text: str, problem: str) -> None:
    (tmp_path / "x.xsd").write_text(
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"><xs:element name="r"/></xs:schema>'
    )
    file = tmp_path / "sample.toml"
    file.write_text(text)
    with pytest.raises(ProfileError) as caught:
        load_profile(file)
    assert problem in str(caught.value)


def test_fee_note_sample_pdf_is_pdfa_2b_and_reproducible() -> None:
    sample = BUNDLED_PROFILE_DIR / "samples" / "fee-note.pdf"
    facts = inspect_pdf(sample.read_bytes())
    assert facts.pdfa == "2B" and pdfa_problems(facts) == []
    assert facts.version == "1.7"
    module = load_make_samples()
    rebuilt = module.build_pdfa([module.FEE_NOTE_LINES], title="Mémoire d'honoraires — exemple")
    assert rebuilt == sample.read_bytes()
