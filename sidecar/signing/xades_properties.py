"""XAdES qualifying properties beyond B-B (ETSI EN 319 132-1), built with lxml.

signxml writes the SignedProperties (B-B). The unsigned signature properties
of the higher levels are added here, each appended after the ones already
present — the order of incorporation is what the archive timestamp covers:

- B-T: ``xades:SignatureTimeStamp`` over the canonicalized ``ds:SignatureValue``
  element (exclusive C14N: its imprint then does not depend on the namespaces
  declared by the caller's document);
- B-LT: ``xades:CertificateValues`` and ``xades:RevocationValues``
  (``CRLValues`` before ``OCSPValues``, as the XSD's sequence demands);
- B-LTA: ``xades141:ArchiveTimeStamp`` over the input of clause 5.5.2.2.

The same functions compute the timestamp inputs for the verifier.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Iterable

from asn1crypto import x509
from lxml import etree

from .xmldsig import (
    C14N_EXCL,
    C14N_INCL,
    XADES141,
    c14n,
    dereference,
    ds,
    xades,
    xades141,
)

__all__ = [
    "add_archive_timestamp",
    "add_certificate_values",
    "add_revocation_values",
    "add_signature_timestamp",
    "archive_timestamp_input",
    "find_qualifying_properties",
    "signature_timestamp_input",
    "unsigned_signature_properties",
]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


#: Values up to this size have their base64 text remembered (:func:`_encapsulated`).
_REMEMBERED_SIZE = 64 * 1024


@functools.lru_cache(maxsize=128)
def _remembered_b64(data: bytes) -> str:
    return _b64(data)


def _encapsulated(data: bytes) -> str:
    """The base64 text of a certificate, CRL or OCSP response to embed.

    Every B-LT signature of one signer embeds the same few values (its chain, the
    TSA's, the revocation data the cache holds until it is stale): their text is
    remembered rather than encoded again per signature. Large values (a big CRL) are
    encoded each time, so that the memory kept stays small.
    """
    if len(data) > _REMEMBERED_SIZE:
        return _b64(data)
    return _remembered_b64(data)


def find_qualifying_properties(signature: etree._Element) -> etree._Element | None:
    """This signature's xades:QualifyingProperties (its Target naming the signature)."""
    target = "#" + (signature.get("Id") or "")
    for props in signature.iterfind(f"{ds('Object')}/{xades('QualifyingProperties')}"):
        if props.get("Target") == target:
            return props
    return None


def unsigned_signature_properties(signature: etree._Element) -> etree._Element:
    """The signature's xades:UnsignedSignatureProperties, created when missing."""
    props = find_qualifying_properties(signature)
    if props is None:
        raise ValueError("the signature has no xades:QualifyingProperties")
    # SubElement without nsmap: lxml reuses the prefixes already declared above,
    # so no redundant declaration is written.
    unsigned = props.find(xades("UnsignedProperties"))
    if unsigned is None:
        unsigned = etree.SubElement(props, xades("UnsignedProperties"))
    usp = unsigned.find(xades("UnsignedSignatureProperties"))
    if usp is None:
        usp = etree.SubElement(unsigned, xades("UnsignedSignatureProperties"))
        # UnsignedSignatureProperties precedes UnsignedDataObjectProperties.
        unsigned.insert(0, usp)
    return usp


def _property_id(signature: etree._Element, name: str, usp: etree._Element) -> str:
    count = sum(1 for child in usp if etree.QName(child).localname == name)
    return f"{signature.get('Id')}-{name}{count or ''}"


def signature_timestamp_input(signature: etree._Element, algorithm: str = C14N_EXCL) -> bytes:
    """What a SignatureTimeStamp's imprint hashes: the c14n of ds:SignatureValue, tags included."""
    value = signature.find(ds("SignatureValue"))
    if value is None:
        raise ValueError("the signature has no ds:SignatureValue")
    return c14n(value, algorithm)


def _timestamp_element(
    parent: etree._Element,
    tag: str,
    element_id: str,
    token: bytes,
    algorithm: str,
    nsmap: dict[str, str] | None = None,
) -> etree._Element:
    stamp = etree.SubElement(parent, tag, nsmap=nsmap, Id=element_id)
    etree.SubElement(stamp, ds("CanonicalizationMethod"), Algorithm=algorithm)
    encapsulated = etree.SubElement(stamp, xades("EncapsulatedTimeStamp"))
    encapsulated.text = _b64(token)
    return stamp


def add_signature_timestamp(
    signature: etree._Element, token: bytes, algorithm: str = C14N_EXCL
) -> etree._Element:
    """Append a xades:SignatureTimeStamp holding the DER TimeStampToken ``token``."""
    usp = unsigned_signature_properties(signature)
    return _timestamp_element(
        usp,
        xades("SignatureTimeStamp"),
        _property_id(signature, "SignatureTimeStamp", usp),
        token,
        algorithm,
    )


def add_certificate_values(
    signature: etree._Element, certificates: Iterable[x509.Certificate]
) -> etree._Element | None:
    """Append xades:CertificateValues with the certificates not already in the signature."""
    present = _certificates_in(signature)
    missing = [c for c in certificates if c.dump() not in present]
    if not missing:
        return None
    usp = unsigned_signature_properties(signature)
    values = etree.SubElement(
        usp, xades("CertificateValues"), Id=_property_id(signature, "CertificateValues", usp)
    )
    for cert in dict.fromkeys(c.dump() for c in missing):
        etree.SubElement(values, xades("EncapsulatedX509Certificate")).text = _encapsulated(cert)
    return values


def _certificates_in(signature: etree._Element) -> set[bytes]:
    found: set[bytes] = set()
    paths = (
        f"{ds('KeyInfo')}/{ds('X509Data')}/{ds('X509Certificate')}",
        f".//{xades('CertificateValues')}/{xades('EncapsulatedX509Certificate')}",
    )
    for path in paths:
        for element in signature.iterfind(path):
            found.add(base64.b64decode("".join((element.text or "").split())))
    return found


def add_revocation_values(
    signature: etree._Element, crls: Iterable[bytes], ocsp_responses: Iterable[bytes]
) -> etree._Element | None:
    """Append xades:RevocationValues (CRLValues, then OCSPValues)."""
    crls = list(dict.fromkeys(crls))
    ocsp_responses = list(dict.fromkeys(ocsp_responses))
    if not crls and not ocsp_responses:
        return None
    usp = unsigned_signature_properties(signature)
    values = etree.SubElement(
        usp, xades("RevocationValues"), Id=_property_id(signature, "RevocationValues", usp)
    )
    if crls:
        crl_values = etree.SubElement(values, xades("CRLValues"))
        for crl in crls:
            etree.SubElement(crl_values, xades("EncapsulatedCRLValue")).text = _encapsulated(crl)
    if ocsp_responses:
        ocsp_values = etree.SubElement(values, xades("OCSPValues"))
        for response in ocsp_responses:
            encapsulated = etree.SubElement(ocsp_values, xades("EncapsulatedOCSPValue"))
            encapsulated.text = _encapsulated(response)
    return values


def archive_timestamp_input(
    signature: etree._Element,
    algorithm: str = C14N_INCL,
    *,
    before: etree._Element | None = None,
) -> bytes:
    """The input of a xades141:ArchiveTimeStamp (EN 319 132-1, 5.5.2.2, not distributed).

    The references' outputs in SignedInfo order, then SignedInfo, SignatureValue
    and KeyInfo, then each unsigned signature property in order of appearance
    (up to ``before``, the archive timestamp being verified), then every
    ds:Object but the one holding the QualifyingProperties — each canonicalized
    with ``algorithm``.
    """
    parts: list[bytes] = []
    signed_info = signature.find(ds("SignedInfo"))
    if signed_info is None:
        raise ValueError("the signature has no ds:SignedInfo")
    for reference in signed_info.iterfind(ds("Reference")):
        parts.append(dereference(reference, signature))
    for name in ("SignedInfo", "SignatureValue", "KeyInfo"):
        element = signature.find(ds(name))
        if element is not None:
            parts.append(c14n(element, algorithm))
    props = find_qualifying_properties(signature)
    usp = None if props is None else props.find(f".//{xades('UnsignedSignatureProperties')}")
    if usp is not None:
        for child in usp:
            if child is before:
                break
            if isinstance(child.tag, str):
                parts.append(c14n(child, algorithm))
    for obj in signature.iterfind(ds("Object")):
        if props is None or props.getparent() is not obj:
            parts.append(c14n(obj, algorithm))
    return b"".join(parts)


def add_archive_timestamp(
    signature: etree._Element, token: bytes, algorithm: str = C14N_INCL
) -> etree._Element:
    """Append a xades141:ArchiveTimeStamp; ``token`` must stamp :func:`archive_timestamp_input`."""
    usp = unsigned_signature_properties(signature)
    return _timestamp_element(
        usp,
        xades141("ArchiveTimeStamp"),
        _property_id(signature, "ArchiveTimeStamp", usp),
        token,
        algorithm,
        {"xades141": XADES141},
    )
