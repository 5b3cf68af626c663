"""XMLDSig processing shared by the XAdES signer and verifier.

Names and algorithms from W3C XML Signature 1.1 and ETSI EN 319 132-1. Only the
algorithms the engine produces or the CNS can send are known here; anything
else is refused (:class:`UnsupportedAlgorithm`), never guessed.

The reference processing model (:func:`dereference`) is deliberately narrow:
same-document references only (``""`` or ``#Id``, with each Id unique in the
document), and the transforms ``enveloped-signature``, the canonicalizations,
and the XPath filter ``not(ancestor-or-self::ds:Signature)`` that parallel
signatures use. It is what both the verifier (digests) and the B-LTA archive
timestamp (whose input is the references' output) need.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator

from lxml import etree

__all__ = [
    "C14N_EXCL",
    "C14N_INCL",
    "DIGESTS",
    "DS",
    "ENVELOPED",
    "PARALLEL_XPATH",
    "XADES",
    "XADES141",
    "XPATH_FILTER",
    "UnresolvableReference",
    "UnsupportedAlgorithm",
    "c14n",
    "dereference",
    "digest",
    "ds",
    "element_by_id",
    "without_signatures",
    "xades",
    "xades141",
]

DS = "http://www.w3.org/2000/09/xmldsig#"
XADES = "http://uri.etsi.org/01903/v1.3.2#"
XADES141 = "http://uri.etsi.org/01903/v1.4.1#"

C14N_INCL = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
C14N_INCL_COMMENTS = C14N_INCL + "#WithComments"
C14N_EXCL = "http://www.w3.org/2001/10/xml-exc-c14n#"
C14N_EXCL_COMMENTS = C14N_EXCL + "WithComments"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
XPATH_FILTER = "http://www.w3.org/TR/1999/REC-xpath-19991116"
#: The one XPath filter expression accepted: every signature excluded from the
#: data, so that signatures side by side (parallel) do not cover each other.
PARALLEL_XPATH = "not(ancestor-or-self::ds:Signature)"

#: Canonicalization URI → (exclusive, with_comments). C14N 1.1 is left out on
#: purpose: xadesjs rejects it, and lxml has no serializer for it.
_C14N: dict[str, tuple[bool, bool]] = {
    C14N_INCL: (False, False),
    C14N_INCL_COMMENTS: (False, True),
    C14N_EXCL: (True, False),
    C14N_EXCL_COMMENTS: (True, True),
}
_WITHOUT_COMMENTS = {
    C14N_INCL_COMMENTS: C14N_INCL,
    C14N_EXCL_COMMENTS: C14N_EXCL,
}

#: Digest URI → hashlib name.
DIGESTS: dict[str, str] = {
    "http://www.w3.org/2001/04/xmlenc#sha256": "sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha384": "sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512": "sha512",
}
DIGEST_URIS = {name: uri for uri, name in DIGESTS.items()}


class UnsupportedAlgorithm(ValueError):
    """An algorithm or transform this engine does not process."""


class UnresolvableReference(ValueError):
    """A ds:Reference that cannot be resolved safely (missing or duplicate Id...)."""


def ds(name: str) -> str:
    return f"{{{DS}}}{name}"


def xades(name: str) -> str:
    return f"{{{XADES}}}{name}"


def xades141(name: str) -> str:
    return f"{{{XADES141}}}{name}"


def c14n(node: etree._Element | etree._ElementTree, algorithm: str = C14N_INCL) -> bytes:
    """Canonicalize an element (in its document context) or a whole document."""
    try:
        exclusive, comments = _C14N[algorithm]
    except KeyError:
        raise UnsupportedAlgorithm(f"canonicalization {algorithm!r} is not supported") from None
    return etree.tostring(node, method="c14n", exclusive=exclusive, with_comments=comments)


def digest(data: bytes, algorithm_uri: str) -> bytes:
    try:
        name = DIGESTS[algorithm_uri]
    except KeyError:
        raise UnsupportedAlgorithm(f"digest {algorithm_uri!r} is not supported") from None
    return hashlib.new(name, data).digest()


_ID_ATTRIBUTES = ("Id", "ID", "id")


def _ids(document: etree._ElementTree, value: str) -> Iterator[etree._Element]:
    for element in document.getroot().iter(etree.Element):
        for name in _ID_ATTRIBUTES:
            if element.get(name) == value:
                yield element
                break


def element_by_id(document: etree._ElementTree, value: str) -> etree._Element:
    """The one element whose Id is ``value``; duplicates are an attack (wrapping)."""
    found = list(_ids(document, value))
    if not found:
        raise UnresolvableReference(f"no element has Id {value!r}")
    if len(found) > 1:
        raise UnresolvableReference(f"Id {value!r} is used by {len(found)} elements")
    return found[0]


def _without(
    document: etree._ElementTree, signature: etree._Element, *, all_signatures: bool
) -> etree._ElementTree:
    """A copy of the document without this signature (or without every signature)."""
    clone = copy.deepcopy(document)
    # Same position in the copy: walk the original and the copy in step.
    originals = list(document.getroot().iter(etree.Element))
    copies = list(clone.getroot().iter(etree.Element))
    doomed = [
        copies[index]
        for index, element in enumerate(originals)
        if (element is signature)
        or (all_signatures and element.tag == ds("Signature") and _outermost_signature(element))
    ]
    for element in doomed:
        _remove_keeping_tail(element)
    return clone


def without_signatures(document: etree._ElementTree) -> etree._ElementTree:
    """A copy of the document with every ds:Signature taken out (the parallel XPath filter)."""
    clone = copy.deepcopy(document)
    for element in [e for e in clone.getroot().iter(ds("Signature")) if _outermost_signature(e)]:
        _remove_keeping_tail(element)
    return clone


def _outermost_signature(element: etree._Element) -> bool:
    return not any(a.tag == ds("Signature") for a in element.iterancestors())


def _remove_keeping_tail(element: etree._Element) -> None:
    parent = element.getparent()
    if parent is None:
        raise UnresolvableReference("a signature cannot be the document element here")
    if element.tail:
        previous = element.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + element.tail
        else:
            parent.text = (parent.text or "") + element.tail
    parent.remove(element)


def dereference(reference: etree._Element, signature: etree._Element) -> bytes:
    """The octets a ds:Reference digests, per the XMLDSig reference processing model."""
    document = signature.getroottree()
    uri = reference.get("URI")
    if uri is None:
        raise UnresolvableReference("a Reference without URI is not supported")
    if uri == "":
        target: etree._Element | etree._ElementTree = document
    elif uri.startswith("#") and len(uri) > 1 and "(" not in uri:
        target = element_by_id(document, uri[1:])
    else:
        raise UnresolvableReference(f"only same-document references are accepted (URI={uri!r})")

    transforms = reference.findall(f"{ds('Transforms')}/{ds('Transform')}")
    algorithms = [t.get("Algorithm", "") for t in transforms]
    # Node-set transforms first (removing signatures), then at most one final c14n.
    removal: str | None = None
    index = 0
    while index < len(algorithms) and algorithms[index] in (ENVELOPED, XPATH_FILTER):
        if algorithms[index] == XPATH_FILTER:
            expression = "".join(transforms[index].findtext(ds("XPath")) or "").strip()
            if expression != PARALLEL_XPATH:
                raise UnsupportedAlgorithm(f"XPath transform {expression!r} is not supported")
            removal = "all"
        elif removal is None:
            removal = "this"
        index += 1
    rest = algorithms[index:]
    if len(rest) > 1:
        raise UnsupportedAlgorithm(f"transform chain {algorithms!r} is not supported")
    method = rest[0] if rest else C14N_INCL
    if method not in _C14N:
        raise UnsupportedAlgorithm(f"transform {method!r} is not supported")
    # Same-document references select their nodes without comments (XMLDSig
    # 4.4.3.3): a #WithComments canonicalization cannot bring them back.
    method = _WITHOUT_COMMENTS.get(method, method)

    if removal is not None:
        if uri != "" and not _contains(target, signature, removal == "all"):
            # Removing nothing is allowed by XMLDSig, but c14n of the copy would
            # lose the element's context: canonicalize the original instead.
            return c14n(target, method)
        clone = _without(document, signature, all_signatures=removal == "all")
        if uri == "":
            return c14n(clone, method)
        return c14n(element_by_id(clone, uri[1:]), method)
    return c14n(target, method)


def _contains(
    target: etree._Element | etree._ElementTree, signature: etree._Element, any_sig: bool
) -> bool:
    root = target.getroot() if isinstance(target, etree._ElementTree) else target
    if any_sig:
        return any(True for _ in root.iter(ds("Signature")))
    return any(a is root for a in signature.iterancestors()) or signature is root
