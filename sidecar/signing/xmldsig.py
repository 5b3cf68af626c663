"""XMLDSig processing shared by the XAdES signer and verifier.

Names and algorithms from W3C XML Signature 1.1 and ETSI EN 319 132-1. Only the
algorithms the engine produces or the CNS can send are known here; anything
else is refused (:class:`UnsupportedAlgorithm`), never guessed.

The reference processing model (:func:`dereference`) takes same-document
references only (``""``, ``#Id`` with each Id unique in the document, and the
XPointers ``#xpointer(/)`` and ``#xpointer(id('Id'))`` that XMLDSig recommends),
and the transforms ``enveloped-signature``, XPath Filter 2.0, the XPath filter
``not(ancestor-or-self::ds:Signature)`` that parallel signatures use, the
canonicalizations and base64 (XMLDSig 6.6.2, which every implementation must
support). A reference's node-set is kept as whole subtrees, the only shape these
produce. It is what both the verifier (digests) and the B-LTA archive timestamp
(whose input is the references' output) need.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import re
from collections.abc import Iterator

from lxml import etree

from ..errors import BadInput

__all__ = [
    "BASE64",
    "C14N_EXCL",
    "C14N_INCL",
    "DIGESTS",
    "DS",
    "ENVELOPED",
    "PARALLEL_XPATH",
    "WEAK_DIGESTS",
    "XADES",
    "XADES141",
    "XPATH_FILTER",
    "XPATH_FILTER2",
    "AmbiguousReference",
    "UnresolvableReference",
    "UnsupportedAlgorithm",
    "c14n",
    "dereference",
    "digest",
    "ds",
    "element_by_id",
    "is_parallel_xpath",
    "resolve_uri",
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
XPATH_FILTER2 = "http://www.w3.org/2002/06/xmldsig-filter2"
BASE64 = "http://www.w3.org/2000/09/xmldsig#base64"
#: The one XPath filter expression accepted: every signature excluded from the
#: data, so that signatures side by side (parallel) do not cover each other.
PARALLEL_XPATH = "not(ancestor-or-self::ds:Signature)"

C14N11 = "http://www.w3.org/2006/12/xml-c14n11"
C14N11_COMMENTS = C14N11 + "#WithComments"

#: Canonicalization URI → (exclusive, with_comments). The signer never writes C14N
#: 1.1 (xadesjs rejects it, and lxml has no serializer for it); the verifier reads
#: it where it gives the same octets as C14N 1.0 (see :func:`c14n`).
_C14N: dict[str, tuple[bool, bool]] = {
    C14N_INCL: (False, False),
    C14N_INCL_COMMENTS: (False, True),
    C14N_EXCL: (True, False),
    C14N_EXCL_COMMENTS: (True, True),
    C14N11: (False, False),
    C14N11_COMMENTS: (False, True),
}
_WITHOUT_COMMENTS = {
    C14N_INCL_COMMENTS: C14N_INCL,
    C14N_EXCL_COMMENTS: C14N_EXCL,
    C14N11_COMMENTS: C14N11,
}
_XML_NS = "http://www.w3.org/XML/1998/namespace"

#: Digest URI → hashlib name.
DIGESTS: dict[str, str] = {
    "http://www.w3.org/2001/04/xmlenc#sha256": "sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha384": "sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512": "sha512",
}
DIGEST_URIS = {name: uri for uri, name in DIGESTS.items()}
#: Digests XMLDSig defines that are too weak to rely on today (ETSI TS 119 312): a
#: validator computes them, to tell a changed document from a weak one, but a match
#: proves nothing (INDETERMINATE / CRYPTO_CONSTRAINTS_FAILURE_NO_POE).
WEAK_DIGESTS: dict[str, str] = {"http://www.w3.org/2000/09/xmldsig#sha1": "sha1"}


class UnsupportedAlgorithm(ValueError, BadInput):
    """An algorithm or transform this engine does not process."""


class UnresolvableReference(ValueError, BadInput):
    """A ds:Reference whose data cannot be had here (another document, a missing Id)."""


class AmbiguousReference(UnresolvableReference):
    """A ds:Reference to an Id that several elements carry: the wrapping attack."""


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
    if algorithm in (C14N11, C14N11_COMMENTS) and isinstance(node, etree._Element):
        # C14N 1.1 differs from 1.0 only where a subset's apex inherits xml:id or
        # xml:base from an ancestor outside it (1.1 section 2.4): elsewhere their
        # octets are the same, and only that case is refused.
        for ancestor in node.iterancestors():
            if any(ancestor.get(f"{{{_XML_NS}}}{name}") for name in ("id", "base")):
                raise UnsupportedAlgorithm("C14N 1.1 of an element inheriting xml:id/xml:base")
    return etree.tostring(node, method="c14n", exclusive=exclusive, with_comments=comments)


def digest(data: bytes, algorithm_uri: str) -> bytes:
    """The digest named by ``algorithm_uri`` (a weak one included: see WEAK_DIGESTS)."""
    try:
        name = DIGESTS.get(algorithm_uri) or WEAK_DIGESTS[algorithm_uri]
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
        raise AmbiguousReference(f"Id {value!r} is used by {len(found)} elements")
    return found[0]


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
    nodes, xpointer = _NodeSet.from_uri(document, uri)

    transforms = reference.findall(f"{ds('Transforms')}/{ds('Transform')}")
    # Node-set transforms first (taking signatures or filtered subtrees out), then at
    # most one final transform that makes octets: a canonicalization or base64.
    index = 0
    while index < len(transforms) and transforms[index].get("Algorithm") in _NODE_SET_TRANSFORMS:
        transform = transforms[index]
        algorithm = transform.get("Algorithm")
        if algorithm == ENVELOPED:
            nodes.subtract([signature])
        elif algorithm == XPATH_FILTER:
            if not is_parallel_xpath(transform.find(ds("XPath"))):
                expression = (transform.findtext(ds("XPath")) or "").strip()
                raise UnsupportedAlgorithm(f"XPath transform {expression!r} is not supported")
            nodes.subtract(
                [e for e in document.getroot().iter(ds("Signature")) if _outermost_signature(e)]
            )
        else:
            _filter2(nodes, transform)
        index += 1
    rest = [t.get("Algorithm", "") for t in transforms[index:]]
    if len(rest) > 1:
        raise UnsupportedAlgorithm(
            f"transform chain {[t.get('Algorithm', '') for t in transforms]!r} is not supported"
        )
    method = rest[0] if rest else C14N_INCL
    if method == BASE64:
        return nodes.base64_decoded()
    if method not in _C14N:
        raise UnsupportedAlgorithm(f"transform {method!r} is not supported")
    if not xpointer:
        # A bare-name or empty URI selects its nodes without comments (XMLDSig
        # 4.4.3.3): a #WithComments canonicalization cannot bring them back. An
        # XPointer keeps them, for a canonicalization that keeps comments.
        method = _WITHOUT_COMMENTS.get(method, method)
    return nodes.canonicalize(method)


def resolve_uri(document: etree._ElementTree, uri: str) -> tuple[etree._Element | None, bool]:
    """What a same-document reference URI designates (``None``: the whole document),
    and whether the URI is an XPointer (whose node-set keeps comments)."""
    if uri == "":
        return None, False
    if uri == "#xpointer(/)":
        return None, True
    match = _XPOINTER_ID.match(uri[1:]) if uri.startswith("#") else None
    if match:
        return element_by_id(document, match.group(2)), True
    if uri.startswith("#") and len(uri) > 1 and "(" not in uri:
        return element_by_id(document, uri[1:]), False
    raise UnresolvableReference(f"only same-document references are accepted (URI={uri!r})")


_PARALLEL_XPATH = re.compile(r"^not\(ancestor-or-self::([\w.-]+):Signature\)$")


def is_parallel_xpath(element: etree._Element | None) -> bool:
    """Whether an XPath filter is ``not(ancestor-or-self::P:Signature)`` with ``P``
    bound to the XMLDSig namespace where it is written (any prefix, as other signers
    choose their own: trusted lists use ``dsig``)."""
    if element is None:
        return False
    match = _PARALLEL_XPATH.match((element.text or "").strip())
    return match is not None and element.nsmap.get(match.group(1)) == DS


#: Transforms whose output is a node-set (processed before the final one).
_NODE_SET_TRANSFORMS = (ENVELOPED, XPATH_FILTER, XPATH_FILTER2)
_XPOINTER_ID = re.compile(r"""^xpointer\(id\((['"])([^'"]+)\1\)\)$""")
_FILTER2_OPERATIONS = ("intersect", "subtract", "union")


class _NodeSet:
    """A reference's node-set, as subtrees of the document: what a same-document URI
    selects, less the subtrees that transforms take out, plus those a union puts back.

    Whole subtrees are the only shapes XMLDSig's same-document URIs, the enveloped
    transform, the parallel-signature XPath and XPath Filter 2.0 produce (Filter 2.0
    works on subtrees by definition), so membership is decided per element from the
    operations in order; every node of an element's content goes with its element.
    """

    def __init__(self, document: etree._ElementTree, apex: etree._Element | None) -> None:
        self.document = document
        #: (operation, subtree roots); ``None`` in a set stands for the document node.
        self.operations: list[tuple[str, list[etree._Element | None]]] = [("intersect", [apex])]

    @classmethod
    def from_uri(cls, document: etree._ElementTree, uri: str) -> tuple[_NodeSet, bool]:
        """The node-set of a same-document URI, and whether it is an XPointer."""
        apex, xpointer = resolve_uri(document, uri)
        return cls(document, apex), xpointer

    def subtract(self, roots: list[etree._Element | None]) -> None:
        self.operations.append(("subtract", roots))

    def apply(self, operation: str, roots: list[etree._Element | None]) -> None:
        self.operations.append((operation, roots))

    def _includes(self, element: etree._Element | None, chain: frozenset[etree._Element]) -> bool:
        """Membership of ``element`` (None: the document node's own children, the
        top-level comments and PIs) whose ancestors-or-self are ``chain``."""
        included = True
        for operation, roots in self.operations:
            hit = any(root is None or (element is not None and root in chain) for root in roots)
            if operation == "intersect":
                included = included and hit
            elif operation == "subtract":
                included = included and not hit
            else:
                included = included or hit
        return included

    def _shape(self) -> tuple[bool, list[etree._Element], list[etree._Element]]:
        """(top-level nodes included, apexes, topmost excluded elements inside apexes)."""
        # Keyed by the elements themselves, never by id(): an lxml proxy lives only as
        # long as a reference to it, and a new one for the same node has a new id.
        apexes: list[etree._Element] = []
        excluded: list[etree._Element] = []
        chains: dict[etree._Element, frozenset[etree._Element]] = {}
        states: dict[etree._Element, bool] = {}
        for element in self.document.getroot().iter():
            parent = element.getparent()
            chain = (chains[parent] if parent is not None else frozenset()) | {element}
            chains[element] = chain
            inside = states[element] = self._includes(element, chain)
            parent_inside = parent is not None and states[parent]
            if inside and not parent_inside:
                if any(a in excluded for a in element.iterancestors()):
                    # Put back inside a subtree that was taken out: a shape that
                    # removing subtrees cannot render, and that no signer writes.
                    raise UnsupportedAlgorithm("an XPath Filter 2.0 union inside a subtract")
                apexes.append(element)
            elif parent_inside and not inside:
                excluded.append(element)
        return self._includes(None, frozenset()), apexes, excluded

    def _rendered(self) -> tuple[etree._ElementTree, list[etree._Element], bool]:
        """A copy of the document without the excluded subtrees; its apexes; and
        whether the whole document (with its top-level nodes) is the node-set."""
        top_level, apexes, excluded = self._shape()
        clone = copy.deepcopy(self.document)
        originals = list(self.document.getroot().iter())
        positions = {element: index for index, element in enumerate(originals)}
        copies = list(clone.getroot().iter())
        for element in excluded:
            _remove_keeping_tail(copies[positions[element]])
        root = self.document.getroot()
        whole = top_level and len(apexes) == 1 and apexes[0] is root
        return clone, [copies[positions[a]] for a in apexes], whole

    def canonicalize(self, method: str) -> bytes:
        clone, apexes, whole = self._rendered()
        if whole:
            return c14n(clone, method)
        return b"".join(c14n(apex, method) for apex in apexes)

    def base64_decoded(self) -> bytes:
        """XMLDSig 6.6.2: the string value of the node-set's text nodes, decoded."""
        _clone, apexes, _whole = self._rendered()
        text = "".join("".join(apex.xpath("descendant-or-self::text()")) for apex in apexes)
        try:
            return base64.b64decode("".join(text.split()), validate=True)
        except binascii.Error as exc:
            raise UnresolvableReference(
                f"the base64 transform's input is not base64: {exc}"
            ) from None


def _filter2(nodes: _NodeSet, transform: etree._Element) -> None:
    """XML-Signature XPath Filter 2.0: each XPath selects subtrees to intersect with,
    subtract, or add back, in order. ``here()`` (the XPath element) is supported at
    the start of an expression, ``/`` as the document and ``id('X')`` by Id."""
    filters = transform.findall(f"{{{XPATH_FILTER2}}}XPath")
    if not filters:
        raise UnsupportedAlgorithm("an XPath Filter 2.0 transform without XPath")
    for element in filters:
        operation = element.get("Filter", "")
        if operation not in _FILTER2_OPERATIONS:
            raise UnsupportedAlgorithm(f"XPath Filter 2.0 operation {operation!r}")
        expression = (element.text or "").strip()
        nodes.apply(operation, _select(nodes.document, element, expression))


def _select(
    document: etree._ElementTree, here: etree._Element, expression: str
) -> list[etree._Element | None]:
    if expression == "/":
        return [None]
    match = re.fullmatch(r"""id\((['"])([^'"]+)\1\)""", expression)
    if match:
        return [element_by_id(document, match.group(2))]
    namespaces = {k: v for k, v in here.nsmap.items() if k}
    try:
        if expression.startswith("here()"):
            found = here.xpath("." + expression[len("here()") :], namespaces=namespaces)
        elif "here()" in expression:
            raise UnsupportedAlgorithm(f"XPath {expression!r}: here() only at the start")
        else:
            found = document.xpath(expression, namespaces=namespaces)
    except etree.XPathError as exc:
        raise UnsupportedAlgorithm(f"XPath {expression!r}: {exc}") from None
    if not isinstance(found, list) or not all(isinstance(n, etree._Element) for n in found):
        raise UnsupportedAlgorithm(f"XPath {expression!r} selects other than elements")
    return list(found)
