"""The one model of a CNS message: where its UUID is, whether and how it is signed.

:func:`read_message` parses the message once, with the daemon's one safe parser
(:func:`sidecar.signing.xml_safety.parse_xml`: no DTD, no entity, bounded size and
depth; it raises that module's :class:`~sidecar.signing.xml_safety.XmlInputError`
family: ``MalformedXml`` with line and column, ``ForbiddenDtd``, ``XmlLimitExceeded``),
and reads from that one tree what the forwarding needs:

- the message's UUID (DSR 3.6.2: every XML message carries an RFC 4122 section 4.4
  UUID), by the one rule of :class:`MessageRule`: the operator's ``[cns] uuid_xpath``
  if set; else, for a document of a profile (its root element is the profile's), the
  profile's ``[uuid] xpath``; else the first element whose local name is ``UUID`` or
  ``MessageId`` (any namespace, outside ``ds:Signature``), else a ``uuid`` or ``Id``
  attribute of the root element. It must be a version-4, RFC 4122 variant UUID; it
  is returned in lower-case canonical form (:class:`InvalidUuid` otherwise);
- whether it carries a ``ds:Signature`` and the XAdES level that signature's unsigned
  properties reach (:func:`sidecar.signing.xades.xades_level`, the engine's own reading:
  structural, not a validation);
- the level the CNS requires of it (the profile's XML level; B-LT without a profile).
"""

from __future__ import annotations

import uuid as uuid_module
from collections.abc import Iterable
from dataclasses import dataclass

from lxml import etree

from ..errors import BadInput
from ..signing.profiles import Profile
from ..signing.report import Level
from ..signing.xades import xades_level
from ..signing.xml_safety import DEFAULT_MAX_SIZE, ParsedXml, parse_xml
from ..signing.xmldsig import DS

__all__ = [
    "CnsMessage",
    "DocumentError",
    "InvalidUuid",
    "MessageRule",
    "read_message",
]

#: What the CNS requires when no profile says (DSR 3.4.2: XML signed at least B-LT).
DEFAULT_REQUIRED_LEVEL = Level.B_LT


class DocumentError(BadInput):
    """The message cannot be forwarded as it is."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidUuid(DocumentError):
    """No UUID where it should be, or not an RFC 4122 version-4 UUID."""


_DEFAULT_UUID_XPATH = etree.XPath(
    "//*[(local-name()='UUID' or local-name()='MessageId') "
    f"and not(ancestor::*[local-name()='Signature' and namespace-uri()='{DS}'])]"
)


@dataclass(frozen=True)
class MessageRule:
    """Where a message's UUID is and which level it needs: one rule for every message
    (deposit, PID exchange) and every reading of it (before and after signing)."""

    #: ``[cns] uuid_xpath``: the operator's word, above any profile ("" when unset).
    uuid_xpath: str = ""
    #: The profiles a CNS message may be a document of (matched on the root element).
    profiles: tuple[Profile, ...] = ()

    @classmethod
    def of(cls, uuid_xpath: str, profiles: Iterable[Profile]) -> MessageRule:
        """The rule for ``[cns] uuid_xpath`` and the profiles that go to the CNS."""
        return cls(uuid_xpath, tuple(p for p in profiles if p.cns_operation != "none"))

    def profile_of(self, root: etree._Element) -> Profile | None:
        """The profile *root* is a document of, if any."""
        return next((p for p in self.profiles if p.root == root.tag), None)

    def uuid_of(self, root: etree._Element) -> str:
        """The message's UUID (see the module docstring for where it is looked for)."""
        profile = self.profile_of(root)
        if self.uuid_xpath:
            where = f"at cns.uuid_xpath {self.uuid_xpath}"
            value = _first_text(_evaluate(root, self.uuid_xpath, {}, "cns.uuid_xpath"))
        elif profile is not None and profile.uuid_xpath:
            where = f"at {profile.uuid_xpath} (profile {profile.name!r})"
            found = _evaluate(
                root, profile.uuid_xpath, dict(profile.namespaces), f"{profile.name}: uuid.xpath"
            )
            value = _first_text(found)
        else:
            where = "(element UUID or MessageId)"
            value = _first_text(_DEFAULT_UUID_XPATH(root))
            if value is None:
                value = root.get("uuid") or root.get("Id")
        if not value or not value.strip():
            raise InvalidUuid(f"the message carries no UUID {where}")
        value = value.strip()
        try:
            parsed = uuid_module.UUID(value)
        except ValueError:
            raise InvalidUuid(f"{value[:64]!r} is not a UUID") from None
        if parsed.variant != uuid_module.RFC_4122 or parsed.version != 4:
            raise InvalidUuid(f"{value} is not an RFC 4122 version-4 (random) UUID")
        return str(parsed)

    def required_level(self, root: etree._Element) -> Level:
        """The XAdES level the CNS requires of this message."""
        profile = self.profile_of(root)
        if profile is not None and profile.xml_level is not None:
            return profile.xml_level
        return DEFAULT_REQUIRED_LEVEL


def _evaluate(root: etree._Element, xpath: str, namespaces: dict[str, str], what: str) -> object:
    try:
        return root.xpath(xpath, namespaces=namespaces)
    except etree.XPathError as exc:
        raise InvalidUuid(f"{what} cannot be evaluated: {exc}") from None


def _first_text(found: object) -> str | None:
    if isinstance(found, list) and found:
        first = found[0]
        if isinstance(first, etree._Element):
            return first.text or ""
        return str(first)
    if isinstance(found, str):
        return found
    return None


@dataclass(frozen=True)
class CnsMessage:
    """A message parsed once, and what the forwarding reads from it."""

    parsed: ParsedXml
    uuid: str
    #: The level its signature reaches; ``None``: not signed (no ``ds:Signature``).
    level: Level | None
    #: The level the CNS requires of it.
    required: Level

    @property
    def data(self) -> bytes:
        return self.parsed.data

    @property
    def signed(self) -> bool:
        return self.level is not None


def read_message(data: bytes, rule: MessageRule) -> CnsMessage:
    """Parse *data* once and read it by *rule*.

    Raises :class:`~sidecar.signing.xml_safety.XmlInputError` (not XML, a DTD, over
    the bounds) or :class:`InvalidUuid`. The size is the caller's to bound (the route's
    body limit): a fee note with its PDF/A embedded may pass the parser's default."""
    parsed = parse_xml(data, max_size=max(len(data), DEFAULT_MAX_SIZE))
    root = parsed.root
    tag = f"{{{DS}}}Signature"
    signature = root if root.tag == tag else root.find(f".//{tag}")
    level = xades_level(signature) if signature is not None else None
    return CnsMessage(parsed, rule.uuid_of(root), level, rule.required_level(root))
