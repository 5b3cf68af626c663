"""The sandbox's own trusted lists: a LOTL and an LU-style list, signed, served over loopback.

So that the whole trusted-list path (fetch, signature check, cache, anchors,
qualification) runs offline in tests and in the sandbox, the sandbox publishes, beside
its TSA/OCSP/CRL::

    GET /sandbox/lists/eu-lotl.xml   the list of the lists, pointing at lu.xml
    GET /sandbox/lists/lu.xml        the sandbox CA as CA/QC, the sandbox TSA as TSA/QTST

Both are signed (XAdES enveloped, as the EU's) by a sandbox list-signing key kept in
``<sandbox>/lists/`` and generated at first use; the LOTL designates that key's
certificate for LU, and the sandbox's :class:`ListPolicy` names it as the LOTL signer.
The CA/QC service carries the qualifiers QCStatement, QCForESig and QCWithQSCD for the
sandbox signers' certificates (key usage nonRepudiation): their signatures are QESig.
:func:`write_sandbox_lists` can also write the lists with the TSA withdrawn at a chosen
time (what the tests need).
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web
from asn1crypto import pem as asn1_pem
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import SignatureMethod
from signxml.xades import XAdESSigner

from ..trust.lists.source import ListPolicy
from .pki import ARCH_LABEL, SandboxPKI

__all__ = [
    "LIST_ROUTE",
    "SandboxLists",
    "add_list_routes",
    "ensure_sandbox_lists",
    "sandbox_list_policy",
    "write_sandbox_lists",
]

LIST_ROUTE = f"/{ARCH_LABEL}/lists"
_TSL = "http://uri.etsi.org/02231/v2#"
_ADD = "http://uri.etsi.org/02231/v2/additionaltypes#"
_SIE = "http://uri.etsi.org/TrstSvc/SvcInfoExt/eSigDir-1999-93-EC-TrustedList/#"
_TRSTSVC = "http://uri.etsi.org/TrstSvc"
_TL = f"{_TRSTSVC}/TrustedList"
_GRANTED = f"{_TL}/Svcstatus/granted"
_WITHDRAWN = f"{_TL}/Svcstatus/withdrawn"


@dataclass(frozen=True)
class SandboxLists:
    directory: Path
    signer_cert: asn1_x509.Certificate
    lotl_url: str
    lu_url: str


def _lists_dir(pki: SandboxPKI) -> Path:
    return pki.directory / "lists"


def _signer(directory: Path) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key_file, cert_file = directory / "signer.key.pem", directory / "signer.pem"
    if key_file.exists() and cert_file.exists():
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key, x509.load_pem_x509_certificate(cert_file.read_bytes())
    directory.mkdir(mode=0o755, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "LU"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Sidecar sandbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Sidecar Sandbox Trusted List Signer"),
        ]
    )
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(
            x509.KeyUsage(True, True, False, False, False, False, False, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def _e(
    parent: etree._Element, tag: str, text: str | None = None, ns: str = _TSL, **attrs: str
) -> etree._Element:
    element = etree.SubElement(parent, f"{{{ns}}}{tag}", **attrs)
    if text is not None:
        element.text = text
    return element


def _lang(parent: etree._Element, tag: str, child: str, text: str) -> None:
    _e(_e(parent, tag), child, text, **{"{http://www.w3.org/XML/1998/namespace}lang": "en"})


def _address(parent: etree._Element, tag: str) -> None:
    address = _e(parent, tag)
    postal = _e(
        _e(address, "PostalAddresses"),
        "PostalAddress",
        **{"{http://www.w3.org/XML/1998/namespace}lang": "en"},
    )
    _e(postal, "StreetAddress", "127.0.0.1")
    _e(postal, "Locality", "Loopback")
    _e(postal, "CountryName", "LU")
    _lang(address, "ElectronicAddress", "URI", "mailto:sandbox@localhost")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _scheme(
    root: etree._Element, *, sequence: int, territory: str, list_type: str
) -> etree._Element:
    info = _e(root, "SchemeInformation")
    _e(info, "TSLVersionIdentifier", "5")
    _e(info, "TSLSequenceNumber", str(sequence))
    _e(info, "TSLType", f"{_TL}/TSLType/{list_type}")
    _lang(info, "SchemeOperatorName", "Name", "Sidecar sandbox")
    _address(info, "SchemeOperatorAddress")
    _lang(info, "SchemeName", "Name", f"{territory}: sidecar sandbox trusted list (tests only)")
    _lang(info, "SchemeInformationURI", "URI", "http://127.0.0.1/")
    _e(info, "StatusDeterminationApproach", f"{_TL}/StatusDetn/EUappropriate")
    _e(_e(info, "SchemeTypeCommunityRules"), "URI", f"{_TL}/schemerules/EUcommon")
    _e(info, "SchemeTerritory", territory)
    _lang(info, "PolicyOrLegalNotice", "TSLLegalNotice", "Sandbox list: never for real signatures.")
    _e(info, "HistoricalInformationPeriod", "65535")
    return info


def _next_update(info: etree._Element, moment: datetime) -> None:
    _e(_e(info, "NextUpdate"), "dateTime", _iso(moment))


def _digital_identity(parent: etree._Element, tag: str, cert_der: bytes) -> None:
    identity = _e(parent, tag)
    _e(_e(identity, "DigitalId"), "X509Certificate", base64.b64encode(cert_der).decode())


def _sign(root: etree._Element, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> bytes:
    # Inclusive C14N 1.0: with exclusive C14N signxml's SignedProperties digest does not
    # verify (see the XAdES notes in sidecar/signing/xades.py's tests).
    signer = XAdESSigner(
        signature_algorithm=SignatureMethod.RSA_SHA256,
        c14n_algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
    )
    signed = signer.sign(root, key=key, cert=[cert], always_add_key_value=False)
    return etree.tostring(signed, xml_declaration=True, encoding="UTF-8")


def _lotl(
    pki: SandboxPKI, signer: x509.Certificate, lu_url: str, issued: datetime
) -> etree._Element:
    root = etree.Element(
        f"{{{_TSL}}}TrustServiceStatusList",
        nsmap={None: _TSL, "ns4": _ADD},
        Id="lotl",
        TSLTag="http://uri.etsi.org/19612/TSLTag",
    )
    info = _scheme(root, sequence=1, territory="EU", list_type="EUlistofthelists")
    pointer = _e(_e(info, "PointersToOtherTSL"), "OtherTSLPointer")
    _digital_identity(
        _e(pointer, "ServiceDigitalIdentities"),
        "ServiceDigitalIdentity",
        signer.public_bytes(serialization.Encoding.DER),
    )
    _e(pointer, "TSLLocation", lu_url)
    more = _e(pointer, "AdditionalInformation")
    _e(_e(more, "OtherInformation"), "TSLType", f"{_TL}/TSLType/EUgeneric")
    _e(_e(more, "OtherInformation"), "SchemeTerritory", "LU")
    _e(_e(more, "OtherInformation"), "MimeType", "application/vnd.etsi.tsl+xml", ns=_ADD)
    rules = _e(_e(more, "OtherInformation"), "SchemeTypeCommunityRules")
    _e(rules, "URI", f"{_TL}/schemerules/EUcommon")
    _e(rules, "URI", f"{_TL}/schemerules/LU")
    _dates(info, issued)
    return root


def _dates(info: etree._Element, issued: datetime) -> None:
    # ListIssueDateTime and NextUpdate come after PointersToOtherTSL in the schema.
    _e(info, "ListIssueDateTime", _iso(issued))
    _next_update(info, issued + timedelta(days=180))


def _service(
    services: etree._Element,
    *,
    service_type: str,
    name: str,
    cert_der: bytes,
    statuses: list[tuple[str, datetime]],
    qualified_esig: bool = False,
) -> None:
    service = _e(services, "TSPService")
    info = _e(service, "ServiceInformation")
    _e(info, "ServiceTypeIdentifier", f"{_TRSTSVC}/Svctype/{service_type}")
    _lang(info, "ServiceName", "Name", name)
    _digital_identity(info, "ServiceDigitalIdentity", cert_der)
    (status, since), *history = statuses
    _e(info, "ServiceStatus", status)
    _e(info, "StatusStartingTime", _iso(since))
    if qualified_esig:
        extensions = _e(info, "ServiceInformationExtensions")
        extension = _e(extensions, "Extension", Critical="true")
        _e(
            _e(extension, "AdditionalServiceInformation"),
            "URI",
            f"{_TL}/SvcInfoExt/ForeSignatures",
            **{"{http://www.w3.org/XML/1998/namespace}lang": "en"},
        )
        extension = _e(extensions, "Extension", Critical="true")
        element = _e(_e(extension, "Qualifications", ns=_SIE), "QualificationElement", ns=_SIE)
        qualifiers = _e(element, "Qualifiers", ns=_SIE)
        for qualifier in ("QCStatement", "QCForESig", "QCWithQSCD"):
            _e(qualifiers, "Qualifier", ns=_SIE, uri=f"{_TL}/SvcInfoExt/{qualifier}")
        criteria = _e(element, "CriteriaList", ns=_SIE)
        criteria.set("assert", "all")
        usage = _e(criteria, "KeyUsage", ns=_SIE)
        _e(usage, "KeyUsageBit", "true", ns=_SIE, name="nonRepudiation")
    if history:
        box = _e(service, "ServiceHistory")
        for status, since in history:
            item = _e(box, "ServiceHistoryInstance")
            _e(item, "ServiceTypeIdentifier", f"{_TRSTSVC}/Svctype/{service_type}")
            _lang(item, "ServiceName", "Name", name)
            _digital_identity(item, "ServiceDigitalIdentity", cert_der)
            _e(item, "ServiceStatus", status)
            _e(item, "StatusStartingTime", _iso(since))


def _pem_der(path: Path) -> tuple[bytes, datetime]:
    _, _, der = asn1_pem.unarmor(path.read_bytes())
    cert = asn1_x509.Certificate.load(der)
    return der, cert.not_valid_before


def _lu(
    pki: SandboxPKI, issued: datetime, tsa_withdrawn: datetime | None, sequence: int
) -> etree._Element:
    root = etree.Element(
        f"{{{_TSL}}}TrustServiceStatusList",
        nsmap={None: _TSL, "ns5": _SIE},
        Id="tl-lu",
        TSLTag="http://uri.etsi.org/19612/TSLTag",
    )
    info = _scheme(root, sequence=sequence, territory="LU", list_type="EUgeneric")
    _dates(info, issued)
    tsp = _e(_e(root, "TrustServiceProviderList"), "TrustServiceProvider")
    tsp_info = _e(tsp, "TSPInformation")
    _lang(tsp_info, "TSPName", "Name", "Sidecar sandbox")
    _address(tsp_info, "TSPAddress")
    _lang(tsp_info, "TSPInformationURI", "URI", "http://127.0.0.1/")
    services = _e(tsp, "TSPServices")
    ca_der, ca_from = _pem_der(pki.directory / "certs" / "intermediate.pem")
    tsa_der, tsa_from = _pem_der(pki.tsa_cert_pem)
    _service(
        services,
        service_type="CA/QC",
        name="Sidecar Sandbox Issuing CA",
        cert_der=ca_der,
        statuses=[(_GRANTED, ca_from)],
        qualified_esig=True,
    )
    tsa_statuses = [(_GRANTED, tsa_from)]
    if tsa_withdrawn is not None:
        tsa_statuses.insert(0, (_WITHDRAWN, tsa_withdrawn))
    _service(
        services,
        service_type="TSA/QTST",
        name="Sidecar Sandbox TSA",
        cert_der=tsa_der,
        statuses=tsa_statuses,
    )
    return root


def write_sandbox_lists(
    pki: SandboxPKI,
    *,
    tsa_withdrawn: datetime | None = None,
    issued: datetime | None = None,
    sequence: int = 1,
) -> SandboxLists:
    """(Re)write and sign the sandbox LOTL and LU list; *tsa_withdrawn*: the TSA's
    QTST service withdrawn from that time on; *sequence*: the LU list's TSLSequenceNumber."""
    directory = _lists_dir(pki)
    key, cert = _signer(directory)
    issued = issued or datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    lotl_url = f"{pki.base_url}{LIST_ROUTE}/eu-lotl.xml"
    lu_url = f"{pki.base_url}{LIST_ROUTE}/lu.xml"
    (directory / "lu.xml").write_bytes(_sign(_lu(pki, issued, tsa_withdrawn, sequence), key, cert))
    (directory / "eu-lotl.xml").write_bytes(_sign(_lotl(pki, cert, lu_url, issued), key, cert))
    return SandboxLists(
        directory,
        asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER)),
        lotl_url,
        lu_url,
    )


def ensure_sandbox_lists(pki: SandboxPKI) -> SandboxLists:
    """The sandbox lists, written and signed at first use."""
    directory = _lists_dir(pki)
    lu, lotl = directory / "lu.xml", directory / "eu-lotl.xml"
    # Re-issued monthly, well before their NextUpdate (180 days): a sandbox kept for
    # months still has current lists.
    fresh = time.time() - 30 * 86400
    if lu.exists() and lotl.exists() and min(lu.stat().st_mtime, lotl.stat().st_mtime) > fresh:
        _, cert = _signer(directory)
        return SandboxLists(
            directory,
            asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER)),
            f"{pki.base_url}{LIST_ROUTE}/eu-lotl.xml",
            f"{pki.base_url}{LIST_ROUTE}/lu.xml",
        )
    return write_sandbox_lists(pki)


def sandbox_list_policy(lists: SandboxLists) -> ListPolicy:
    """Fetch the sandbox's LOTL and LU list, the LOTL verified with the sandbox signer."""
    return ListPolicy(
        lotl_url=lists.lotl_url,
        territories=("LU",),
        lotl_signers=(lists.signer_cert,),
        timeout=10.0,
    )


def add_list_routes(app: web.Application, pki: SandboxPKI) -> None:
    """Serve ``<sandbox>/lists/*.xml`` (read at each request: tests rewrite them)."""
    directory = _lists_dir(pki)

    async def serve(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ("eu-lotl.xml", "lu.xml"):
            raise web.HTTPNotFound()
        try:
            body = (directory / name).read_bytes()
        except FileNotFoundError:
            raise web.HTTPNotFound() from None
        return web.Response(body=body, content_type="application/vnd.etsi.tsl+xml")

    app.router.add_get(LIST_ROUTE + "/{name}", serve)
