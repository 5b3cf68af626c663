"""Timestamp tokens and requests: building a TimeStampReq, the one reader of a
TimeStampToken (:func:`read_token`), the checked token, and the reply's chain completion.

Tokens are kept with the exact bytes the TSA signed (:class:`ReceivedContentInfo`):
asn1crypto re-encodes a structure whose length happens to end in 0x80 (it takes it
for an indefinite length), which costs a full re-encoding of the token each time a
CMS object holding it is written, and would alter a token not in strict DER.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from asn1crypto import cms, parser, tsp, x509

from ..._hooks.asn1crypto_hooks import ReceivedContentInfo
from ...bounded import remember
from ...logs import request_extra
from ...upstream import describe

log = logging.getLogger("sidecar.trust.tsa")


#: Hash algorithms accepted for imprints (RFC 3161 via RFC 5816; no SHA-1).
DIGEST_SIZES: Mapping[str, int] = {"sha256": 32, "sha384": 48, "sha512": 64}


@dataclass(frozen=True)
class TimeStampToken:
    """A checked RFC 3161 token: the DER ``ContentInfo`` and what it says."""

    content_info: cms.ContentInfo
    tst_info: tsp.TSTInfo
    tsa_url: str
    #: The TSA's certificate, then its issuers up to and including the anchor.
    chain: tuple[x509.Certificate, ...]
    #: The certificates the token carries, as :func:`read_token` read them (None:
    #: read from :attr:`content_info` when asked).
    carried: tuple[x509.Certificate, ...] | None = field(default=None, compare=False)

    @property
    def der(self) -> bytes:
        return self.content_info.dump()

    @property
    def gen_time(self) -> datetime:
        value: datetime = self.tst_info["gen_time"].native
        return value

    @property
    def serial_number(self) -> int:
        value: int = self.tst_info["serial_number"].native
        return value

    @property
    def policy(self) -> str:
        return str(self.tst_info["policy"].dotted)

    @property
    def hash_algorithm(self) -> str:
        return str(self.tst_info["message_imprint"]["hash_algorithm"]["algorithm"].native)

    @property
    def imprint(self) -> bytes:
        value: bytes = self.tst_info["message_imprint"]["hashed_message"].native
        return value

    @property
    def signer(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def certificates(self) -> tuple[x509.Certificate, ...]:
        """Every certificate the token itself carries (the chain may hold more)."""
        if self.carried is not None:
            return self.carried
        choices = self.content_info["content"]["certificates"] or ()
        return tuple(c.chosen for c in choices if c.name == "certificate")


@dataclass(frozen=True)
class RelayedReply:
    """A caller's TimeStampReq answered: the TSA's TimeStampResp bytes, unchanged, and the token."""

    response_der: bytes
    token: TimeStampToken


@dataclass(frozen=True)
class TokenContents:
    """What a TimeStampToken says (read, not yet trusted: :func:`check_reply` judges it)."""

    #: The token, with the exact bytes received (:class:`ReceivedContentInfo`).
    content_info: cms.ContentInfo
    signed_data: cms.SignedData
    tst_info: tsp.TSTInfo
    gen_time: datetime
    #: Hash algorithm name of the message imprint (``"sha256"``...).
    imprint_algorithm: str
    imprint: bytes
    #: The certificate that signed the token, when the token carries it.
    tsa_certificate: x509.Certificate | None
    #: Every certificate the token carries.
    certificates: tuple[x509.Certificate, ...]


class _KnownCertificates:
    """Certificates read from tokens, one parsed object per DER encoding.

    Every token of a TSA carries the same certificates: the object read from an
    earlier token (asn1crypto parses lazily and keeps what it parsed, its SHA-256
    and names included) serves the next ones, so a token costs no certificate
    parsing. Keyed on the exact DER bytes: a different encoding is another entry.
    """

    def __init__(self, max_entries: int = 64) -> None:
        self._by_der: dict[bytes, x509.Certificate] = {}
        self._max_entries = max_entries
        self._lock = threading.Lock()

    def known(self, cert: x509.Certificate) -> x509.Certificate:
        der = cert.dump()
        with self._lock:
            found = self._by_der.get(der)
            if found is None:
                found = remember(self._by_der, der, x509.Certificate.load(der), self._max_entries)
        return found


_TOKEN_CERTIFICATES = _KnownCertificates()


def read_token(der: bytes) -> TokenContents:
    """Parse a DER TimeStampToken (CMS SignedData over a TSTInfo), fully; ``ValueError``
    when it is not one. The one reader of tokens: the reply check, the XAdES engines and
    the doctor all go through it."""
    try:
        content_info: cms.ContentInfo = ReceivedContentInfo.received(der)
        if content_info["content_type"].native != "signed_data":
            raise ValueError("the token is not CMS SignedData")
        signed_data: cms.SignedData = content_info["content"]
        encap = signed_data["encap_content_info"]
        if encap["content_type"].native != "tst_info":
            raise ValueError("the token does not encapsulate a TSTInfo")
        tst_info: tsp.TSTInfo = encap["content"].parsed
        tst_info.native  # noqa: B018 - force a full parse: asn1crypto is lazy
        imprint = tst_info["message_imprint"]
        certificates = tuple(
            _TOKEN_CERTIFICATES.known(c.chosen)
            for c in (signed_data["certificates"] or ())
            if c.name == "certificate"
        )
        (signer_info,) = signed_data["signer_infos"]
        sid = signer_info["sid"]
        # As pyHanko identifies the signer; the check then holds it against the ESS
        # signing-certificate attribute.
        tsa_certificate = next((c for c in certificates if designates(sid, c)), None)
        return TokenContents(
            content_info=content_info,
            signed_data=signed_data,
            tst_info=tst_info,
            gen_time=tst_info["gen_time"].native,
            imprint_algorithm=imprint["hash_algorithm"]["algorithm"].native,
            imprint=imprint["hashed_message"].native,
            tsa_certificate=tsa_certificate,
            certificates=certificates,
        )
    except ValueError:
        raise
    except Exception as exc:  # asn1crypto raises many kinds on bad input
        raise ValueError(f"not a TimeStampToken: {exc}") from None


def token_of_reply(response_der: bytes) -> bytes:
    """The TimeStampToken's own bytes inside a TimeStampResp (status, then token);
    ``ValueError`` when there is not exactly one token after the status."""
    _, _, _, _, body, _ = parser.parse(response_der, strict=True)
    status_length = parser.peek(body)
    token = body[status_length:]
    if not token or parser.peek(token) != len(token):
        raise ValueError("no single time-stamp token after the status")
    return token


def make_request(
    digest: bytes, algorithm: str, *, policy: str | None = None, nonce: int | None = None
) -> tsp.TimeStampReq:
    """A TimeStampReq with a fresh 64-bit nonce and ``certReq`` set."""
    _check_imprint(algorithm, digest)
    request: dict[str, object] = {
        "version": "v1",
        "message_imprint": {
            "hash_algorithm": {"algorithm": algorithm},
            "hashed_message": digest,
        },
        "nonce": nonce if nonce is not None else secrets.randbits(63) | (1 << 62),
        "cert_req": True,
    }
    if policy is not None:
        request["req_policy"] = policy
    return tsp.TimeStampReq(request)


def parse_request(data: bytes) -> tsp.TimeStampReq:
    """Parse and check a caller's DER TimeStampReq; ValueError says what is wrong."""
    if not data:
        raise ValueError("the body is empty")
    try:
        request = tsp.TimeStampReq.load(data, strict=True)
        request.native  # noqa: B018 - force a full parse: asn1crypto is lazy
    except (ValueError, TypeError) as exc:
        log.info("refused TimeStampReq: %s", describe(exc), extra=request_extra())
        raise ValueError("not a DER-encoded RFC 3161 TimeStampReq") from None
    if request["version"].native != "v1":
        raise ValueError("TimeStampReq version must be 1")
    imprint = request["message_imprint"]
    _check_imprint(imprint["hash_algorithm"]["algorithm"].native, imprint["hashed_message"].native)
    return request


def _check_imprint(algorithm: str, digest: bytes) -> None:
    size = DIGEST_SIZES.get(algorithm)
    if size is None:
        raise ValueError(
            f"hash algorithm {algorithm!r} is not accepted (use {', '.join(DIGEST_SIZES)})"
        )
    if len(digest) != size:
        raise ValueError(f"a {algorithm} digest is {size} bytes, not {len(digest)}")


def complete_chain(response_der: bytes, token: TimeStampToken) -> bytes:
    """The reply with the TSA's intermediate certificates added to the token, if missing.

    RFC 3161 2.4.1 lets the certificates field carry more than the TSA's own; the
    field is outside the signature. Callers verifying with ``openssl ts -verify
    -CAfile roots.pem`` need the intermediates. Signed parts are copied byte for
    byte; if anything else would change, the reply is returned as it was.
    """
    try:
        response = tsp.TimeStampResp.load(response_der)
        content_info = response["time_stamp_token"]
        signed_data = content_info["content"]
        present = [c.chosen for c in (signed_data["certificates"] or ()) if c.name == "certificate"]
        have = {c.sha256 for c in present}
        # Intermediates only: the anchor is what the verifier brings.
        missing = [c for c in token.chain[1:-1] if c.sha256 not in have]
        if not missing:
            return response_der
        fields = {
            name: signed_data[name]
            for name in ("version", "digest_algorithms", "encap_content_info", "signer_infos")
        }
        if signed_data["crls"].native is not None:
            fields["crls"] = signed_data["crls"]
        fields["certificates"] = [*(signed_data["certificates"] or ()), *missing]
        new_signed = cms.SignedData(fields)
        new_token = cms.ContentInfo({"content_type": "signed_data", "content": new_signed})
        new_response = tsp.TimeStampResp(
            {"status": response["status"], "time_stamp_token": new_token}
        )
        der = new_response.dump()
        # Paranoia: the signed parts must be the TSA's bytes, untouched.
        again = tsp.TimeStampResp.load(der)["time_stamp_token"]["content"]
        for name in ("encap_content_info", "signer_infos"):
            if again[name].dump() != signed_data[name].dump():
                return response_der
        return der
    except (ValueError, TypeError, KeyError):
        return response_der


def designates(sid: cms.SignerIdentifier, cert: x509.Certificate) -> bool:
    """Whether a CMS ``sid`` names *cert* (issuer and serial, or subject key identifier).

    Names compare by DER first (the usual case), then by RFC 5280 equality, which
    spares the string preparation that dominates the cost of the second.
    """
    if sid.name == "issuer_and_serial_number":
        issuer = sid.chosen["issuer"]
        return bool(
            sid.chosen["serial_number"].native == cert.serial_number
            and (issuer.dump() == cert.issuer.dump() or issuer == cert.issuer)
        )
    return bool(sid.chosen.native == cert.key_identifier)
