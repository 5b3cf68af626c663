"""Enveloped XAdES signatures (ETSI EN 319 132-1) at B-B, B-T, B-LT and B-LTA.

signxml's :class:`~signxml.xades.XAdESSigner` makes the B-B core (inclusive
C14N 1.0 throughout: signxml's exclusive C14N output fails xmlsec1, its C14N
1.1 fails xadesjs); :mod:`sidecar.signing.xades_properties` adds the unsigned
properties of the higher levels.

The caller's document is never re-serialised: the signature element is
serialised alone and inserted into the original bytes just before the end tag
of its parent (the root, or the element the profile's XPath selects), so the
XML declaration, the encoding, the formatting, comments and CDATA sections are
kept byte for byte. The document is parsed once, on input: the data reference
digests that tree (parsed from the caller's very bytes, which is what any
verifier will parse). B-LTA alone parses the signed document back, for its
archive timestamp's input.

Entry point: :func:`sign_xml`, ``async``, in three steps, none of them CPU-bound
on the event loop:

1. :func:`draft_signature` — parsing, checks, canonicalisation, digests: all of a
   B-B signature's CPU but the key's — in a worker process (see
   :mod:`.workers`; without one, in a thread). It needs no key: signxml signs
   with a stand-in that keeps the canonical SignedInfo.
2. The key signs that SignedInfo where it lives, in its own executor (a token
   cannot follow the document into another process; no key material ever does).
3. On the loop: the SignatureValue set in the drafted signature (read back from
   its ~4 KB of XML), the timestamp and revocation data fetched and added, and
   the signature spliced into the caller's bytes.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import hashlib
import itertools
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree
from signxml import SignatureConstructionMethod
from signxml.util import SigningSettings
from signxml.xades import XAdESDataObjectFormat

from .._hooks.signxml_hooks import HookedXAdESSigner
from ..keys.signer import Signer
from ..keys.signxml_adapter import as_cryptography_key
from ..trust.tsa import read_token
from .report import BASELINE_LEVELS, Level
from .sources import (
    TimestampSource,
    UpstreamFailure,
    ValidationData,
    ValidationDataSource,
    collect_for_signature,
)
from .workers import WorkerLost, WorkerPool
from .xades_properties import (
    add_archive_timestamp,
    add_certificate_values,
    add_revocation_values,
    add_signature_timestamp,
    archive_timestamp_input,
    find_qualifying_properties,
    signature_timestamp_input,
)
from .xml_safety import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_SIZE,
    UNBOUNDED_NAMESPACES,
    ElementSpan,
    NamespaceBounds,
    ParsedXml,
    XmlInputError,
    XmlLimitExceeded,
    parse_xml,
)
from .xmldsig import (
    C14N_EXCL,
    C14N_INCL,
    DIGEST_URIS,
    DIGESTS,
    DS,
    PARALLEL_XPATH,
    XPATH_FILTER,
    ds,
    is_parallel_xpath,
    without_signatures,
    xades,
    xades141,
)

__all__ = [
    "AlreadySigned",
    "PlacementError",
    "SignaturePolicy",
    "XadesOptions",
    "augment_xml",
    "draft_signature",
    "sign_xml",
    "xades_level",
]

_R = TypeVar("_R")

logger = logging.getLogger("sidecar.signing.xades")


#: The Id signxml looks for to place an enveloped signature (signer.py, "placeholder").
_PLACEHOLDER_ID = "placeholder"


class AlreadySigned(XmlInputError):
    """The document is signed and a parallel signature is not allowed (or would break it)."""


class PlacementError(XmlInputError):
    """The profile's placement XPath does not select exactly one element."""


@dataclass(frozen=True)
class SignaturePolicy:
    """An explicit signature policy (xades:SignaturePolicyIdentifier/SignaturePolicyId)."""

    #: The policy's OID (``1.2.3``, written ``urn:oid:1.2.3``) or URI.
    identifier: str
    #: Base64 digest of the policy document.
    digest_value: str
    digest_algorithm: str = "sha256"
    description: str | None = None
    #: Where the policy document is published (SPURI qualifier).
    uri: str | None = None

    @property
    def identifier_uri(self) -> str:
        first = self.identifier.split(".")[0]
        return f"urn:oid:{self.identifier}" if first.isdigit() else self.identifier


@dataclass(frozen=True)
class XadesOptions:
    """How to sign; the forms' profiles and ``[signing]`` fill it in."""

    #: XPath selecting the element the signature is appended to (its last child);
    #: ``None``: the document element.
    placement: str | None = None
    #: Prefixes used in :attr:`placement`.
    namespaces: Mapping[str, str] = field(default_factory=dict)
    policy: SignaturePolicy | None = None
    #: xades:SignerRole/ClaimedRoles, e.g. ``("médecin",)``.
    claimed_roles: tuple[str, ...] = ()
    #: Allow a signature next to existing ones. Signatures then exclude each other
    #: with an XPath filter, so that none breaks the others.
    allow_parallel: bool = False
    digest: str = "sha256"
    description: str = "Standardized form"
    mime_type: str = "text/xml"
    max_size: int = DEFAULT_MAX_SIZE
    max_depth: int = DEFAULT_MAX_DEPTH
    #: Bounds on the document's namespace declarations (canonicalising costs the
    #: square of those in scope, per element).
    namespace_bounds: NamespaceBounds = field(default_factory=NamespaceBounds)


# -- B-B with signxml --------------------------------------------------------


class _SidecarXAdESSigner(HookedXAdESSigner):
    """signxml's XAdES signer with the few things EN 319 132-1 baseline needs changed.

    - the data reference digests the document *as parsed from the caller's bytes*
      (a ds:Reference URI="" covers top-level processing instructions, which
      signxml's copy of the root element would lose);
    - SigningCertificateV2 names the signing certificate only (signxml adds one
      CertDigest per certificate in KeyInfo);
    - SignaturePolicyIdentifier may carry an SPURI qualifier;
    - in parallel mode the data reference excludes every signature (XPath filter).
    """

    def __init__(
        self,
        *,
        document: etree._ElementTree,
        options: XadesOptions,
        signing_time: datetime,
        algorithm: str,
    ) -> None:
        super().__init__(
            method=SignatureConstructionMethod.enveloped,
            signature_algorithm=algorithm,
            digest_algorithm=options.digest,
            c14n_algorithm=C14N_INCL,
            claimed_roles=list(options.claimed_roles) or None,
            data_object_format=XAdESDataObjectFormat(
                Description=options.description, MimeType=options.mime_type
            ),
        )
        self._document = document
        self._options = options
        self._signing_time = signing_time
        #: The copy of the document made for this signature (see :meth:`get_root`).
        self.work: etree._Element | None = None

    def get_root(self, data: Any) -> etree._Element:
        # signxml copies its input (serialise, parse) twice: the tree to put the
        # signature in, and the data reference's input (which reference_inputs replaces by
        # the original document). The work copy is a parsed document of its own, made
        # for this signature only: it can take the signature as it is.
        if data is not None and data is self.work:
            return data
        return super().get_root(data)

    def reference_inputs(
        self, references: list[Any], inputs: list[Any]
    ) -> tuple[Sequence[Any], Sequence[Any]]:
        for index, reference in enumerate(references):
            if inputs[index].getparent() is None:
                # The whole document: URI="" (signxml would write "#Id" when the root
                # has an Id, which verifiers can only resolve with an Id declaration).
                references[index] = dataclasses.replace(reference, URI="")
                inputs[index] = (
                    without_signatures(self._document)
                    if self._options.allow_parallel
                    else self._document
                )
        return references, inputs

    def write_transforms(self, transforms_node: etree._Element, reference: Any) -> bool:
        if not (self._options.allow_parallel and reference.URI == ""):
            return False
        xpath = etree.SubElement(transforms_node, ds("Transform"), Algorithm=XPATH_FILTER)
        etree.SubElement(xpath, ds("XPath")).text = PARALLEL_XPATH
        etree.SubElement(transforms_node, ds("Transform"), Algorithm=C14N_INCL)
        return True

    def add_signing_time(
        self,
        signed_signature_properties: etree._Element,
        sig_root: etree._Element,
        signing_settings: SigningSettings,
    ) -> None:
        element = etree.SubElement(signed_signature_properties, xades("SigningTime"))
        element.text = self._signing_time.strftime("%Y-%m-%dT%H:%M:%SZ")

    def add_signing_certificate(
        self,
        signed_signature_properties: etree._Element,
        sig_root: etree._Element,
        signing_settings: SigningSettings,
    ) -> None:
        # signxml calls this only when signing with a certificate chain (ours always has one).
        assert signing_settings.cert_chain
        certificate: x509.Certificate = signing_settings.cert_chain[0]
        der = certificate.public_bytes(Encoding.DER)
        v2 = etree.SubElement(signed_signature_properties, xades("SigningCertificateV2"))
        cert_digest = etree.SubElement(etree.SubElement(v2, xades("Cert")), xades("CertDigest"))
        etree.SubElement(cert_digest, ds("DigestMethod"), Algorithm=self.digest_alg.value)
        etree.SubElement(cert_digest, ds("DigestValue")).text = base64.b64encode(
            self.digest(der, self.digest_alg)
        ).decode("ascii")

    def add_signature_policy_identifier(
        self,
        signed_signature_properties: etree._Element,
        sig_root: etree._Element,
        signing_settings: SigningSettings,
    ) -> None:
        policy = self._options.policy
        if policy is None:
            return
        spi = etree.SubElement(signed_signature_properties, xades("SignaturePolicyIdentifier"))
        spid = etree.SubElement(spi, xades("SignaturePolicyId"))
        sig_policy_id = etree.SubElement(spid, xades("SigPolicyId"))
        etree.SubElement(sig_policy_id, xades("Identifier")).text = policy.identifier_uri
        if policy.description:
            etree.SubElement(sig_policy_id, xades("Description")).text = policy.description
        sig_policy_hash = etree.SubElement(spid, xades("SigPolicyHash"))
        etree.SubElement(
            sig_policy_hash, ds("DigestMethod"), Algorithm=DIGEST_URIS[policy.digest_algorithm]
        )
        etree.SubElement(sig_policy_hash, ds("DigestValue")).text = policy.digest_value
        if policy.uri:
            qualifiers = etree.SubElement(spid, xades("SigPolicyQualifiers"))
            qualifier = etree.SubElement(qualifiers, xades("SigPolicyQualifier"))
            etree.SubElement(qualifier, xades("SPURI")).text = policy.uri


def _signature_algorithm(key_type: str, digest: str) -> str:
    if key_type.startswith("rsa"):
        return f"rsa-{digest}"
    if key_type.startswith("ec"):
        return f"ecdsa-{digest}"
    raise ValueError(f"key type {key_type} is not supported for XAdES")


def _placement_target(parsed: ParsedXml, options: XadesOptions) -> etree._Element:
    if options.placement is None:
        return parsed.root
    try:
        found = parsed.tree.xpath(options.placement, namespaces=dict(options.namespaces))
    except etree.XPathError as exc:
        raise PlacementError(f"placement XPath {options.placement!r} is invalid: {exc}") from None
    elements = [e for e in found if isinstance(e, etree._Element) and isinstance(e.tag, str)]
    if len(elements) != 1:
        raise PlacementError(
            f"placement XPath {options.placement!r} selects {len(elements)} elements, not 1"
        )
    return elements[0]


def _check_existing_signatures(parsed: ParsedXml, options: XadesOptions) -> None:
    existing = [
        s
        for s in parsed.root.iter(ds("Signature"))
        if not any(a.tag == ds("Signature") for a in s.iterancestors())
    ]
    if not existing:
        return
    if parsed.root.tag == ds("Signature"):
        raise AlreadySigned(
            "the document element is itself a signature (an enveloping signature): "
            "there is no document beside it to sign"
        )
    if any(s.get("Id") == _PLACEHOLDER_ID for s in parsed.root.iter(ds("Signature"))):
        # signxml fills a ds:Signature with this Id as its template: the caller's own
        # would be taken for ours (or make two), so it is named, not guessed at.
        raise PlacementError(
            f"the document carries a ds:Signature with Id {_PLACEHOLDER_ID!r} (a signing "
            "template): remove it, or sign the document without it"
        )
    if not options.allow_parallel:
        raise AlreadySigned(
            f"the document already carries {len(existing)} signature(s) and the profile "
            "does not allow parallel signatures"
        )
    for signature in existing:
        for reference in signature.iterfind(f"{ds('SignedInfo')}/{ds('Reference')}"):
            if reference.get("URI") != "":
                continue
            if not any(
                is_parallel_xpath(t.find(ds("XPath")))
                for t in reference.iterfind(f"{ds('Transforms')}/{ds('Transform')}")
                if t.get("Algorithm") == XPATH_FILTER
            ):
                raise AlreadySigned(
                    "an existing signature covers the whole document including any new "
                    "signature: adding one would invalidate it"
                )


@dataclass(frozen=True)
class _Placement:
    """Where the signature goes in the caller's bytes (plain values: made in a worker)."""

    encoding: str
    #: The target's tags in the caller's bytes.
    target_span: ElementSpan
    #: The target's in-scope namespaces: the signature does not repeat them.
    target_nsmap: tuple[tuple[str | None, str], ...]
    #: The target's position in document order.
    target_index: int
    max_depth: int
    signature_id: str

    def splice(self, document: bytes, signature: etree._Element) -> bytes:
        """``document`` with ``signature`` as the last child of the target."""
        text = _without_inherited_declarations(
            etree.tostring(signature, encoding="unicode", with_tail=False),
            dict(self.target_nsmap),
        )
        payload = text.encode(self.encoding, errors="xmlcharrefreplace")
        span = self.target_span
        tag_end, empty = span.start_tag(document)
        if empty:
            # <a .../> becomes <a ...>signature</a>: the only change outside the signature.
            name = _qualified_name(document, span.start)
            head = document[: tag_end - 2].rstrip() + b">"
            return head + payload + b"</" + name + b">" + document[tag_end:]
        return document[: span.end] + payload + document[span.end :]


def _qualified_name(data: bytes, start: int) -> bytes:
    end = start + 1
    while end < len(data) and data[end : end + 1] not in b" \t\r\n/>":
        end += 1
    return data[start + 1 : end]


@dataclass(frozen=True)
class _Drafted:
    """A B-B signature complete but for its SignatureValue: what drafting returns.

    Drafting (parsing, canonicalising, digesting: all the CPU of a B-B signature but
    the key's own operation) needs no key, so it can run in a worker process; the key
    then signs :attr:`signed_info` where it lives (a token cannot follow a document
    into another process, and a software key need not).
    """

    placement: _Placement
    #: The ds:Signature serialised alone (its in-scope namespaces declared on it).
    signature: bytes
    #: The canonical SignedInfo: what the key signs.
    signed_info: bytes
    #: The digest the signature algorithm hashes with.
    digest: str
    #: ECDSA: the byte length of r and of s in the SignatureValue; 0 for RSA.
    ec_size: int = 0


_START_TAG_END = re.compile(r"""(?:[^>"']|"[^"]*"|'[^']*')*>""")


def _without_inherited_declarations(text: str, in_scope: Mapping[str | None, str]) -> str:
    """Drop the namespace declarations lxml copies onto a serialised subtree's top.

    Those already in scope (``in_scope``: the parent's) with the same URI are
    redundant once the subtree is put back under it; keeping them would only clutter
    the signature.
    """
    match = _START_TAG_END.match(text)
    if match is None:  # pragma: no cover - lxml always writes a start tag
        return text
    head = match.group(0)
    for prefix, uri in in_scope.items():
        name = f"xmlns:{prefix}" if prefix else "xmlns"
        head = head.replace(f' {name}="{_attr_escape(uri)}"', "", 1)
    return head + text[match.end() :]


def _attr_escape(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")


class _SignedInfoRecorder:
    """Stands in for the key while drafting: keeps what it is asked to sign.

    It answers with a placeholder of the right shape (an RSA signature is as long
    as the modulus; an ECDSA one is DER, which signxml converts); the real value
    replaces it in :func:`_completed`.
    """

    def __init__(self, certificate: x509.Certificate, key_type: str) -> None:
        self.crypto_certificate = certificate
        self.key_type = key_type
        self.signed: tuple[bytes, str] | None = None

    def sign_blocking(self, data: bytes, *, digest: str = "sha256", pss: bool = False) -> bytes:
        self.signed = (data, digest)
        public = self.crypto_certificate.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            return bytes(public.key_size // 8)
        return encode_dss_signature(1, 1)


def _prepare(document: bytes, options: XadesOptions) -> tuple[ParsedXml, int, ElementSpan]:
    """The caller's document parsed and checked; the signature's parent (index, span)."""
    parsed = parse_xml(
        document,
        max_size=options.max_size,
        max_depth=options.max_depth,
        namespaces=options.namespace_bounds,
    )
    if not parsed.ascii_compatible:
        raise XmlInputError(
            f"documents encoded in {parsed.encoding} are not supported: use UTF-8 or ISO-8859-1"
        )
    _check_existing_signatures(parsed, options)
    target = _placement_target(parsed, options)
    index = next(i for i, e in enumerate(parsed.root.iter(etree.Element)) if e is target)
    return parsed, index, parsed.span_of(target)


def draft_signature(
    document: bytes,
    chain: Sequence[bytes],
    key_type: str,
    options: XadesOptions,
    signing_time: datetime,
) -> _Drafted:
    """Blocking, pure (runs in a worker process): the B-B signature of ``document``
    by the holder of ``chain`` (DER certificates, the signer's first), but for its
    SignatureValue."""
    parsed, target_index, target_span = _prepare(document, options)
    # signxml puts the signature into what it is given: hand it a copy with a
    # placeholder where the signature goes (it digests self._document, the
    # untouched original; get_root takes this copy as it is).
    work = etree.fromstring(etree.tostring(parsed.root))
    target = _nth_element(work, target_index)
    etree.SubElement(target, ds("Signature"), nsmap={"ds": DS}, Id=_PLACEHOLDER_ID)
    certificates = [x509.load_der_x509_certificate(der) for der in chain]
    recorder = _SignedInfoRecorder(certificates[0], key_type)
    xml_signer = _SidecarXAdESSigner(
        document=parsed.tree,
        options=options,
        signing_time=signing_time,
        algorithm=_signature_algorithm(key_type, options.digest),
    )
    xml_signer.work = work
    try:
        root = xml_signer.sign(
            work, key=as_cryptography_key(recorder), cert=certificates, always_add_key_value=False
        )
    except etree.C14NError:
        # libxml2 refuses to canonicalize some well-formed documents: a relative
        # namespace URI (xmlns="namespace") is an error in C14N 1.0 (section 2.1).
        # lxml's exception would not even cross the worker boundary (unpicklable).
        raise XmlInputError(
            "the document cannot be canonicalized (C14N) for signing; "
            'a relative namespace URI such as xmlns="namespace" is the usual cause'
        ) from None
    # The signature took the placeholder's place: the target's last child (elements
    # before it in document order, the target included, kept their positions).
    signature = _nth_element(root, target_index)[-1]
    signature_id = signature.get("Id", "")
    if signature.tag != ds("Signature") or not signature_id or recorder.signed is None:
        raise RuntimeError("signxml did not put the signature where the placeholder was")
    if any(s.get("Id") == signature_id for s in parsed.root.iter(ds("Signature"))):
        raise RuntimeError("the signature Id is not unique in the signed document")
    signed_info, digest = recorder.signed
    placement = _Placement(
        encoding=parsed.encoding,
        target_span=target_span,
        target_nsmap=tuple(signature.getparent().nsmap.items()),
        target_index=target_index,
        # The signature itself nests 8 levels below its parent.
        max_depth=options.max_depth + 16,
        signature_id=signature_id,
    )
    public = certificates[0].public_key()
    ec_size = 0
    if isinstance(public, ec.EllipticCurvePublicKey):
        ec_size = (public.curve.key_size + 7) // 8
    return _Drafted(
        placement, etree.tostring(signature, with_tail=False), signed_info, digest, ec_size
    )


def _nth_element(root: etree._Element, index: int) -> etree._Element:
    """The ``index``-th element of ``root``'s subtree in document order (0: ``root``)."""
    return next(itertools.islice(root.iter(etree.Element), index, None))


#: Our own serialisation read back: no DTD, no entities, no network. Used on the
#: event loop's thread only (an lxml parser must not be shared between threads).
_OWN_XML = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def _completed(drafted: _Drafted, value: bytes) -> etree._Element:
    """The drafted signature with the key's ``value`` as its SignatureValue."""
    if drafted.ec_size:
        # The key gives DER; XMLDSig (RFC 4050) wants r and s side by side, fixed length.
        r, s = decode_dss_signature(value)
        value = r.to_bytes(drafted.ec_size, "big") + s.to_bytes(drafted.ec_size, "big")
    signature = etree.fromstring(drafted.signature, parser=_OWN_XML)
    node = signature.find(ds("SignatureValue"))
    if node is None:  # pragma: no cover - drafted by us
        raise RuntimeError("the drafted signature has no SignatureValue")
    node.text = base64.b64encode(value).decode("ascii")
    return signature


async def _draft(
    workers: WorkerPool | None,
    executor: Executor | None,
    document: bytes,
    signer: Signer,
    options: XadesOptions,
    client: str | None,
) -> _Drafted:
    """:func:`draft_signature` in a worker process (or, without ``workers``, a thread),
    under the pool's deadline and its per-client share (``client``)."""
    await signer.ready()
    chain = [signer.certificate.dump(), *(c.dump() for c in signer.chain)]
    args = (document, chain, signer.key_type, options, datetime.now(UTC))
    if workers is None:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, functools.partial(draft_signature, *args))
    for attempt in (1, 2):
        try:
            return await workers.run(draft_signature, *args, client=client)
        except TimeoutError:
            raise XmlLimitExceeded(
                f"drafting the signature took over {workers.deadline or 0:g} s: the document "
                "is too costly to sign (its worker process was stopped)"
            ) from None
        except WorkerLost:
            # Drafting holds nothing (no key, no state): a lost worker loses nothing,
            # and a fresh one tries once more; twice is the document.
            if attempt == 2:
                raise XmlLimitExceeded(
                    "drafting the signature of this document ended its worker process "
                    "twice (out of memory?)"
                ) from None
    raise AssertionError("unreachable")


async def _signed(drafted: _Drafted, signer: Signer) -> etree._Element:
    """The drafted signature, signed by ``signer`` (off the event loop: the key's executor)."""
    value = await signer.sign(drafted.signed_info, digest=drafted.digest)
    return _completed(drafted, value)


async def sign_xml(
    document: bytes,
    signer: Signer,
    level: Level = Level.B_LT,
    options: XadesOptions | None = None,
    *,
    timestamps: TimestampSource | None = None,
    validation_data: ValidationDataSource | None = None,
    executor: Executor | None = None,
    workers: WorkerPool | None = None,
    client: str | None = None,
) -> bytes:
    """Sign ``document`` with an enveloped XAdES signature at ``level``.

    The signature is drafted (:func:`draft_signature`) in one of ``workers``' processes,
    or without them in ``executor`` (a thread); the key signs in its own executor; the
    timestamps and revocation data are fetched on the event loop. ``client`` (the
    caller's name) is whose share of the workers the drafting counts against.

    Raises :class:`~sidecar.signing.xml_safety.XmlInputError` subclasses for
    refused input (:class:`AlreadySigned`, :class:`PlacementError` included; a draft
    over the workers' deadline is :class:`XmlLimitExceeded`),
    :class:`~sidecar.keys.KeyLocked` / :class:`~sidecar.keys.CertificateNotValid`
    from the key, and :class:`UpstreamFailure` when the TSA or the revocation
    data the level needs cannot be had — never a signature at a lower level;
    :class:`~sidecar.signing.workers.WorkersUnavailable` when no worker took the draft.
    """
    options = options or XadesOptions()
    if level not in BASELINE_LEVELS:
        raise ValueError(f"level must be one of {', '.join(BASELINE_LEVELS)}")
    if level != Level.B_B and timestamps is None:
        raise UpstreamFailure("unavailable", "tsa", f"{level} needs a TSA and none is configured")
    if level in (Level.B_LT, Level.B_LTA) and validation_data is None:
        raise UpstreamFailure(
            "unavailable", "revocation", f"{level} needs revocation data and no source is set"
        )
    loop = asyncio.get_running_loop()

    async def run(fn: Callable[..., _R], *args: object) -> _R:
        return await loop.run_in_executor(executor, functools.partial(fn, *args))

    drafted = await _draft(workers, executor, document, signer, options, client)
    signature = await _signed(drafted, signer)
    placement = drafted.placement

    if level != Level.B_B:
        assert timestamps is not None
        imprint_input = signature_timestamp_input(signature, C14N_EXCL)
        stamp = await timestamps.timestamp(imprint_input, options.digest)
        add_signature_timestamp(signature, stamp.token, C14N_EXCL)

    if level in (Level.B_LT, Level.B_LTA):
        assert validation_data is not None
        data = await _collect(validation_data, signer, stamp.tsa_certificate, stamp.certificates)
        add_certificate_values(signature, data.certificates)
        add_revocation_values(signature, data.crls, data.ocsp_responses)

    if level == Level.B_LTA:
        # The archive timestamp covers the references' output: the whole document
        # as a verifier parses it (top-level comments and PIs included).
        assert timestamps is not None
        signature, archive_input = await run(_archive_input, placement, document, signature)
        archive = await timestamps.timestamp(archive_input, options.digest)
        add_archive_timestamp(signature, archive.token, C14N_INCL)

    if len(document) <= _SPLICE_ON_LOOP:
        return placement.splice(document, signature)
    return await run(placement.splice, document, signature)


#: Below this size, splicing the signature in (copying the bytes) costs less than
#: an executor hop, and is done on the loop.
_SPLICE_ON_LOOP = 1024**2


def _archive_input(
    placement: _Placement, document: bytes, signature: etree._Element
) -> tuple[etree._Element, bytes]:
    """Blocking: the signed document parsed back (the signature in it), and its archive
    timestamp's input."""
    data = placement.splice(document, signature)
    signed = parse_xml(
        data, max_size=len(data) + 1, max_depth=placement.max_depth, namespaces=UNBOUNDED_NAMESPACES
    )
    found = [s for s in signed.root.iter(ds("Signature")) if s.get("Id") == placement.signature_id]
    if len(found) != 1:
        raise RuntimeError("the signature Id is not unique in the signed document")
    return found[0], archive_timestamp_input(found[0], C14N_INCL)


async def _collect(
    source: ValidationDataSource,
    signer: Signer,
    tsa_certificate: asn1_x509.Certificate | None,
    token_certificates: Sequence[asn1_x509.Certificate],
) -> ValidationData:
    """Validation data for the signer's chain and the TSA's, fetched concurrently."""
    chain = [signer.certificate, *signer.chain]
    return await collect_for_signature(source, chain, tsa_certificate, token_certificates)


# -- augmentation: B-B (or B-T) to a higher level -----------------------------


def xades_level(signature: etree._Element) -> Level:
    """The level a signature's unsigned properties reach, read from the structure only
    (no validation: :func:`~sidecar.signing.xades_verify.verify_xml` judges)."""
    usp = signature.find(f".//{xades('UnsignedSignatureProperties')}")
    if usp is None or usp.find(xades("SignatureTimeStamp")) is None:
        return Level.B_B
    # EN 319 132 puts the archive timestamp in the v1.4.1 namespace; XAdES 1.3.2 (and
    # the signers still writing it) in its own: both are B-LTA.
    if usp.find(xades141("ArchiveTimeStamp")) is not None or (
        usp.find(xades("ArchiveTimeStamp")) is not None
    ):
        return Level.B_LTA
    if usp.find(xades("CertificateValues")) is not None and (
        usp.find(xades("RevocationValues")) is not None
    ):
        return Level.B_LT
    return Level.B_T


@dataclass
class _Augmentation:
    """Where new unsigned properties go in the signed bytes.

    Only appends: the new elements become the last children of ``container`` (the
    QualifyingProperties, or an UnsignedSignatureProperties already present), so
    every byte of the signed document stays where it was and nothing signed changes.
    """

    original: ParsedXml
    signature_id: str
    #: ``"qualifying"`` or ``"unsigned"`` (UnsignedSignatureProperties).
    container: str
    #: Children the container has in the original bytes.
    kept: int
    #: The container's tags in the original bytes (taken before the tree is added to).
    container_span: ElementSpan
    max_depth: int
    #: The augmented document parsed back, once :meth:`splice` ran.
    result: ParsedXml | None = None

    def find_container(self, signature: etree._Element) -> etree._Element:
        props = find_qualifying_properties(signature)
        if props is None:  # checked before: the signature is ours to augment
            raise RuntimeError("the QualifyingProperties disappeared")
        if self.container == "qualifying":
            return props
        found = props.find(f"{xades('UnsignedProperties')}/{xades('UnsignedSignatureProperties')}")
        if found is None:
            raise RuntimeError("the UnsignedSignatureProperties disappeared")
        return found

    def signature_in(self, parsed: ParsedXml) -> etree._Element:
        found = [s for s in parsed.root.iter(ds("Signature")) if s.get("Id") == self.signature_id]
        if len(found) != 1:
            raise XmlInputError(f"no single ds:Signature with Id {self.signature_id!r}")
        return found[0]

    def render(self, signature: etree._Element) -> bytes:
        """The original bytes with the container's new children appended."""
        container = self.find_container(signature)
        payload = "".join(
            _without_inherited_declarations(
                etree.tostring(child, encoding="unicode", with_tail=False), container.nsmap
            )
            for child in list(container)[self.kept :]
        ).encode(self.original.encoding, errors="xmlcharrefreplace")
        data = self.original.data
        span = self.container_span
        tag_end, empty = span.start_tag(data)
        if empty:
            name = data[span.start + 1 : tag_end - 2].split()[0]
            head = data[: tag_end - 2].rstrip() + b">"
            data = head + payload + b"</" + name + b">" + data[tag_end:]
        else:
            data = data[: span.end] + payload + data[span.end :]
        return data

    def splice(self, signature: etree._Element) -> etree._Element:
        """:meth:`render`, parsed back: the signature in the new tree (:attr:`result` set)."""
        data = self.render(signature)
        self.result = parse_xml(
            data, max_size=len(data) + 1, max_depth=self.max_depth, namespaces=UNBOUNDED_NAMESPACES
        )
        return self.signature_in(self.result)


def _start_augmentation(
    document: bytes, signature_id: str | None, options: XadesOptions
) -> tuple[_Augmentation, etree._Element]:
    bounds = options.namespace_bounds
    parsed = parse_xml(
        document,
        max_size=options.max_size,
        max_depth=options.max_depth + 16,
        # A signature declares a few namespaces of its own (ds, xades, xades141).
        namespaces=NamespaceBounds(
            None if bounds.total is None else bounds.total + 8,
            None if bounds.in_scope is None else bounds.in_scope + 8,
        ),
    )
    if not parsed.ascii_compatible:
        raise XmlInputError(
            f"documents encoded in {parsed.encoding} are not supported: use UTF-8 or ISO-8859-1"
        )
    signatures = [
        s
        for s in parsed.root.iter(ds("Signature"))
        if not any(a.tag == ds("Signature") for a in s.iterancestors())
        and (signature_id is None or s.get("Id") == signature_id)
    ]
    if len(signatures) != 1:
        which = f"with Id {signature_id!r}" if signature_id else "(give its Id)"
        raise XmlInputError(
            f"the document has {len(signatures)} ds:Signature {which}: cannot tell which to augment"
        )
    signature = signatures[0]
    props = find_qualifying_properties(signature)
    if props is None or not signature.get("Id"):
        raise XmlInputError("the signature is not a XAdES signature (no QualifyingProperties)")
    unsigned = props.find(xades("UnsignedProperties"))
    if unsigned is None:
        container, holder = "qualifying", props
    else:
        usp = unsigned.find(xades("UnsignedSignatureProperties"))
        if usp is None:
            # Appending would put it after UnsignedDataObjectProperties, against the XSD.
            raise XmlInputError(
                "the signature has UnsignedProperties without UnsignedSignatureProperties"
            )
        container, holder = "unsigned", usp
    augmentation = _Augmentation(
        parsed,
        signature.get("Id", ""),
        container,
        len(holder),
        parsed.span_of(holder),
        options.max_depth + 16,
    )
    return augmentation, signature


def _signer_chain(signature: etree._Element) -> list[asn1_x509.Certificate]:
    """The certificates in KeyInfo, the one SigningCertificate(V2) names first."""
    certificates = [
        asn1_x509.Certificate.load(base64.b64decode("".join((e.text or "").split())))
        for e in signature.iterfind(f"{ds('KeyInfo')}/{ds('X509Data')}/{ds('X509Certificate')}")
    ]
    if not certificates:
        raise XmlInputError("the signature carries no certificate in ds:KeyInfo")
    for holder in ("SigningCertificateV2", "SigningCertificate"):
        cert_digest = signature.find(f".//{xades(holder)}/{xades('Cert')}/{xades('CertDigest')}")
        if cert_digest is None:
            continue
        method = cert_digest.find(ds("DigestMethod"))
        algorithm = DIGESTS.get("" if method is None else method.get("Algorithm", ""))
        expected = base64.b64decode(
            "".join((cert_digest.findtext(ds("DigestValue")) or "").split())
        )
        for index, cert in enumerate(certificates):
            if algorithm and hashlib.new(algorithm, cert.dump()).digest() == expected:
                return [cert, *certificates[:index], *certificates[index + 1 :]]
    raise XmlInputError("no certificate in ds:KeyInfo matches the SigningCertificate digest")


async def augment_xml(
    document: bytes,
    level: Level = Level.B_LT,
    options: XadesOptions | None = None,
    *,
    timestamps: TimestampSource | None,
    validation_data: ValidationDataSource | None = None,
    signature_id: str | None = None,
    executor: Executor | None = None,
) -> bytes:
    """Raise an existing XAdES signature (B-B or B-T) to ``level`` (B-T, B-LT, B-LTA).

    What EN 319 132-1 lets be added later is added: the SignatureTimeStamp (now,
    over the existing SignatureValue), CertificateValues and RevocationValues,
    and the archive timestamp. They go, as new last children, into the
    signature's QualifyingProperties (or its UnsignedSignatureProperties): the
    document's bytes are otherwise kept as they are, so the signed parts, their
    digests and the SignatureValue are untouched. A signature already at
    ``level`` or above is returned unchanged.

    The signature is not validated here (the caller signed it, or verifies it);
    errors as :func:`sign_xml`, :class:`XmlInputError` for a document without one
    XAdES signature to augment.
    """
    options = options or XadesOptions()
    if level not in (Level.B_T, Level.B_LT, Level.B_LTA):
        raise ValueError("a signature is augmented to B-T, B-LT or B-LTA")
    if timestamps is None:
        raise UpstreamFailure("unavailable", "tsa", f"{level} needs a TSA and none is configured")
    if level in (Level.B_LT, Level.B_LTA) and validation_data is None:
        raise UpstreamFailure(
            "unavailable", "revocation", f"{level} needs revocation data and no source is set"
        )
    loop = asyncio.get_running_loop()

    def run(fn: Callable[..., _R], *args: object) -> asyncio.Future[_R]:
        return loop.run_in_executor(executor, functools.partial(fn, *args))

    augmentation, signature = await run(_start_augmentation, document, signature_id, options)
    current = xades_level(signature)
    if current.at_least(level):
        return document

    if current == Level.B_B:
        stamp = await timestamps.timestamp(
            signature_timestamp_input(signature, C14N_EXCL), options.digest
        )
        add_signature_timestamp(signature, stamp.token, C14N_EXCL)
        tsa_certificate, token_certificates = stamp.tsa_certificate, stamp.certificates
    else:
        stamp = signature.find(f".//{xades('SignatureTimeStamp')}/{xades('EncapsulatedTimeStamp')}")
        assert stamp is not None  # B-T: xades_level found it
        contents = read_token(base64.b64decode("".join((stamp.text or "").split())))
        tsa_certificate, token_certificates = contents.tsa_certificate, contents.certificates

    if level in (Level.B_LT, Level.B_LTA) and current in (Level.B_B, Level.B_T):
        assert validation_data is not None
        chain = _signer_chain(signature)
        data = await collect_for_signature(
            validation_data, chain, tsa_certificate, token_certificates
        )
        add_certificate_values(signature, data.certificates)
        add_revocation_values(signature, data.crls, data.ocsp_responses)

    if level == Level.B_LTA:
        signature = await run(augmentation.splice, signature)
        archive_input = await run(archive_timestamp_input, signature, C14N_INCL)
        archive = await timestamps.timestamp(archive_input, options.digest)
        add_archive_timestamp(signature, archive.token, C14N_INCL)

    return await run(augmentation.render, signature)
