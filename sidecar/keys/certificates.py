"""Reading certificates and putting a chain in order."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from asn1crypto import pem, x509

from .errors import KeyConfigError

__all__ = ["load_certificates", "order_chain"]


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate in a PEM (one or more blocks) or DER file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyConfigError(
            f"cannot read certificate file {path}: {exc.strerror}", path=str(path)
        ) from None
    try:
        if pem.detect(data):
            return [x509.Certificate.load(der) for _, _, der in pem.unarmor(data, multiple=True)]
        certificate = x509.Certificate.load(data)
        certificate.native  # noqa: B018 - forces a full parse so garbage fails here
        return [certificate]
    except ValueError as exc:
        raise KeyConfigError(
            f"{path} is not a PEM or DER certificate file: {exc}", path=str(path)
        ) from None


def order_chain(leaf: x509.Certificate, pool: Iterable[x509.Certificate]) -> list[x509.Certificate]:
    """The issuers of ``leaf`` found in ``pool``, nearest first, up to a root or a gap.

    Certificates of the pool that are not on the path are dropped: a token or a
    PKCS#12 file often carries unrelated ones.
    """
    candidates = {c.dump(): c for c in pool if c.dump() != leaf.dump()}
    chain: list[x509.Certificate] = []
    current = leaf
    while current.subject != current.issuer:
        issuer = _find_issuer(current, candidates.values())
        if issuer is None:
            break
        chain.append(issuer)
        del candidates[issuer.dump()]
        current = issuer
    return chain


def _find_issuer(
    child: x509.Certificate, candidates: Iterable[x509.Certificate]
) -> x509.Certificate | None:
    for candidate in candidates:
        if candidate.subject != child.issuer:
            continue
        akid = child.authority_key_identifier
        if akid is not None and candidate.key_identifier not in (None, akid):
            continue
        return candidate
    return None
