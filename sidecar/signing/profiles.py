"""Form and signature profiles: one TOML file per standardized form (``profiles/``).

A profile names the form's XSD, where its UUID lives, where the PDF/A version is
embedded (a base64 element), the XML and PDF signature levels and the CNS
operation. The CNS's own XSDs are confidential: sidecar ships stand-ins
(``standin = true``), and a profile of the same name in a configured directory
(``[signing] profile_dirs``, searched after the bundled one) replaces a bundled
profile — that is how the CNS's schema is slotted in. Example::

    name = "fee-note"
    title = "Mémoire d'honoraires"
    xsd = "xsd/fee-note.xsd"          # relative to the TOML file
    root = "{urn:sidecar:standin:cns:fee-note:1}FeeNote"
    cns_operation = "deposit"
    standin = true

    [namespaces]
    fn = "urn:sidecar:standin:cns:fee-note:1"

    [uuid]
    xpath = "/fn:FeeNote/fn:UUID"     # an element (its text) or an attribute
    fill_if_empty = true

    [pdf]
    xpath = "/fn:FeeNote/fn:Document" # base64 element receiving the signed PDF
    level = "B-B"
    require_pdfa = true

    [xml]
    level = "B-LT"                    # "none": the recipe does not sign the XML

:func:`validate_xml` gives every XSD error with its line, column and message.
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lxml import etree

from ..data import resource_dir
from ..errors import Misconfigured
from .report import BASELINE_LEVELS, Level

__all__ = [
    "BUNDLED_PROFILE_DIR",
    "CNS_OPERATIONS",
    "Profile",
    "ProfileError",
    "ProfileRegistry",
    "SchemaError",
    "validate_xml",
]

log = logging.getLogger("sidecar.signing.profiles")


def _bundled_dir() -> Path:
    try:
        return resource_dir("profiles")
    except FileNotFoundError:
        return Path(__file__).resolve().parents[2] / "profiles"


#: The profiles shipped with sidecar (the checkout's ``profiles/``, or the wheel's copy).
BUNDLED_PROFILE_DIR = _bundled_dir()

CNS_OPERATIONS = ("deposit", "pid_simulation", "pid_validation", "pid_contestation", "none")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_LEVELS = {level.value: level for level in BASELINE_LEVELS}


class ProfileError(Misconfigured):
    """A profile file that cannot be used: which file, what is wrong."""

    def __init__(self, file: Path, problem: str) -> None:
        super().__init__(f"{file}: {problem}")
        self.file = file
        self.problem = problem


@dataclass(frozen=True)
class SchemaError:
    """One XSD violation, as API.md's 422 ``schema_violation`` lists them."""

    line: int
    column: int
    message: str

    def as_json(self) -> dict[str, Any]:
        return {"line": self.line, "column": self.column, "message": self.message}


@dataclass(frozen=True)
class Profile:
    name: str
    title: str
    file: Path
    xsd: Path
    #: Clark notation ``{namespace}Local`` of the expected root element.
    root: str
    namespaces: Mapping[str, str]
    uuid_xpath: str | None
    fill_uuid: bool
    #: The base64 element the signed PDF goes into; ``None``: the form has no PDF.
    pdf_xpath: str | None
    pdf_level: Level
    require_pdfa: bool
    #: ``None``: the recipe does not sign the XML.
    xml_level: Level | None
    cns_operation: Literal[
        "deposit", "pid_simulation", "pid_validation", "pid_contestation", "none"
    ]
    #: The XSD is sidecar's stand-in, not the CNS's.
    standin: bool
    description: str = ""
    samples: tuple[Path, ...] = ()
    _schema: list[etree.XMLSchema] = field(default_factory=list, repr=False, compare=False)

    @property
    def schema(self) -> etree.XMLSchema:
        """The compiled XSD (compiled once, on first use)."""
        if not self._schema:
            self._schema.append(_compile(self.xsd, self.file))
        return self._schema[0]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "root": self.root,
            "standin": self.standin,
            "pdf": self.pdf_xpath is not None,
            "pdf_level": self.pdf_level.value,
            "xml_level": self.xml_level.value if self.xml_level else None,
            "cns_operation": self.cns_operation,
        }


def _compile(xsd: Path, owner: Path) -> etree.XMLSchema:
    # Local files only: no network, no entity expansion, even in a vendor's XSD.
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        document = etree.parse(str(xsd), parser=parser)
        return etree.XMLSchema(document)
    except OSError as exc:
        raise ProfileError(owner, f"cannot read the XSD {xsd}: {exc}") from None
    except (etree.XMLSyntaxError, etree.XMLSchemaParseError) as exc:
        raise ProfileError(owner, f"the XSD {xsd} is not usable: {exc}") from None


def _table(doc: Mapping[str, Any], key: str, file: Path) -> Mapping[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ProfileError(file, f"[{key}] must be a table")
    return value


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str, file: Path) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ProfileError(file, f"unknown key(s) in {where}: {', '.join(unknown)}")


def _level(value: Any, where: str, file: Path, *, allow_none: bool) -> Level | None:
    if allow_none and value == "none":
        return None
    if value not in _LEVELS:
        choices = ", ".join([*_LEVELS, *(["none"] if allow_none else [])])
        raise ProfileError(file, f"{where} must be one of {choices} (got {value!r})")
    return _LEVELS[value]


def load_profile(file: Path) -> Profile:
    """Read and check one profile TOML file (the XSD is compiled to check it too)."""
    try:
        doc = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(file, f"cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(file, f"not valid TOML: {exc}") from None
    top = {"name", "title", "description", "xsd", "root", "cns_operation", "standin",
           "samples", "namespaces", "uuid", "pdf", "xml"}  # fmt: skip
    _check_keys(doc, top, "the profile", file)
    name = doc.get("name", file.stem)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ProfileError(file, "name must be lower-case letters, digits and '-'")
    if name != file.stem:
        raise ProfileError(file, f"name {name!r} must match the file name {file.stem!r}")
    for key in ("xsd", "root"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise ProfileError(file, f"{key!r} is required (a string)")
    namespaces = dict(_table(doc, "namespaces", file))
    uuid = _table(doc, "uuid", file)
    _check_keys(uuid, {"xpath", "fill_if_empty"}, "[uuid]", file)
    pdf = _table(doc, "pdf", file)
    _check_keys(pdf, {"xpath", "level", "require_pdfa"}, "[pdf]", file)
    xml = _table(doc, "xml", file)
    _check_keys(xml, {"level"}, "[xml]", file)
    operation = doc.get("cns_operation", "none")
    if operation not in CNS_OPERATIONS:
        raise ProfileError(file, f"cns_operation must be one of {', '.join(CNS_OPERATIONS)}")
    for key, xpath in (("uuid.xpath", uuid.get("xpath")), ("pdf.xpath", pdf.get("xpath"))):
        if xpath is not None:
            try:
                etree.XPath(xpath, namespaces=namespaces)
            except etree.XPathSyntaxError as exc:
                raise ProfileError(file, f"{key} is not a valid XPath: {exc}") from None
    base = file.parent
    xsd = (base / doc["xsd"]).resolve()
    samples = tuple((base / s).resolve() for s in doc.get("samples", []))
    profile = Profile(
        name=name,
        title=str(doc.get("title", name)),
        description=str(doc.get("description", "")),
        file=file,
        xsd=xsd,
        root=doc["root"],
        namespaces=namespaces,
        uuid_xpath=uuid.get("xpath"),
        fill_uuid=bool(uuid.get("fill_if_empty", True)),
        pdf_xpath=pdf.get("xpath"),
        pdf_level=_level(pdf.get("level", "B-B"), "pdf.level", file, allow_none=False) or Level.B_B,
        require_pdfa=bool(pdf.get("require_pdfa", True)),
        xml_level=_level(xml.get("level", "B-LT"), "xml.level", file, allow_none=True),
        cns_operation=operation,
        standin=bool(doc.get("standin", False)),
        samples=samples,
    )
    profile.schema  # noqa: B018 - compile now: a broken XSD is a start-up error
    return profile


class ProfileRegistry:
    """Profiles by name; a later directory's profile replaces an earlier one's."""

    def __init__(self, profiles: Iterable[Profile]) -> None:
        self._profiles: dict[str, Profile] = {}
        for profile in profiles:
            previous = self._profiles.get(profile.name)
            if previous is not None:
                log.info(
                    "profile %s from %s replaces %s", profile.name, profile.file, previous.file
                )
            self._profiles[profile.name] = profile

    @classmethod
    def load(cls, directories: Iterable[Path]) -> ProfileRegistry:
        """Every ``*.toml`` of each directory, in order. Missing directories are skipped
        with a warning; a broken profile raises :class:`ProfileError`."""
        found = []
        for directory in directories:
            if not directory.is_dir():
                log.warning("profile directory %s does not exist", directory)
                continue
            for file in sorted(directory.glob("*.toml")):
                found.append(load_profile(file))
        return cls(found)

    def get(self, name: str) -> Profile | None:
        return self._profiles.get(name)

    def __iter__(self) -> Iterator[Profile]:
        return iter(self._profiles.values())

    def __len__(self) -> int:
        return len(self._profiles)


_ELEMENT_IN_MESSAGE = re.compile(r"Element '(?:\{[^}]*\})?([^']+)'")


def validate_xml(
    tree: etree._ElementTree, profile: Profile, source: bytes | None = None
) -> list[SchemaError]:
    """Every XSD violation of *tree* against *profile* (empty list: valid).

    libxml2 gives each error's line but, for schema errors, no column: when the
    document's bytes are given, the column of the element's start tag on that line
    is looked up (1-based), else it is 1.
    """
    errors: list[SchemaError] = []
    root = tree.getroot()
    if root.tag != profile.root:
        errors.append(
            SchemaError(
                root.sourceline or 1,
                1,
                f"the root element is {root.tag}, "
                f"the profile {profile.name!r} expects {profile.root}",
            )
        )
        return errors
    schema = profile.schema
    if schema.validate(tree):
        return []
    lines = source.decode("utf-8", "replace").splitlines() if source is not None else []
    for entry in schema.error_log:
        line = entry.line or 1
        column = entry.column or 0
        if column <= 0:
            column = _column_of(lines, line, entry.message)
        errors.append(SchemaError(line, column, entry.message))
    return errors


def _column_of(lines: list[str], line: int, message: str) -> int:
    if not 0 < line <= len(lines):
        return 1
    match = _ELEMENT_IN_MESSAGE.search(message)
    if match:
        local = match.group(1)
        found = re.search(rf"<(?:[\w.-]+:)?{re.escape(local)}[\s/>]", lines[line - 1])
        if found:
            return found.start() + 1
    stripped = len(lines[line - 1]) - len(lines[line - 1].lstrip())
    return stripped + 1
