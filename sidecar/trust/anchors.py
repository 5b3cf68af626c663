"""Trust anchors: the root certificates every TSA and signer chain must end at.

Anchors come from three places, merged without duplicates: the certificates bundled
in sidecar's ``certs/`` directory, the files and directory named in ``[trust]``, and
in sandbox mode the sandbox PKI's ``roots.pem``. A file may hold several PEM blocks
or one DER certificate.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from asn1crypto import pem, x509

from ..data import resource_dir
from ..errors import Misconfigured

__all__ = [
    "ANCHOR_SUFFIXES",
    "AnchorError",
    "TrustAnchors",
    "bundled_anchor_dir",
    "load_certificates",
]

log = logging.getLogger("sidecar.trust")

#: File names read from an anchors directory; others (README.md...) are skipped.
ANCHOR_SUFFIXES = frozenset({".pem", ".crt", ".cer", ".der"})


class AnchorError(Misconfigured):
    """A configured anchor file that cannot be read or holds no certificate."""


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate in *path* (PEM, possibly several blocks, or DER)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AnchorError(f"cannot read trust anchor file {path}: {exc.strerror}") from exc
    certs: list[x509.Certificate] = []
    try:
        if pem.detect(data):
            for kind, _, der in pem.unarmor(data, multiple=True):
                if kind == "CERTIFICATE":
                    certs.append(_parse(der))
        else:
            certs.append(_parse(data))
    except ValueError as exc:
        raise AnchorError(f"{path} is not a PEM or DER certificate file: {exc}") from exc
    if not certs:
        raise AnchorError(f"{path} holds no certificate")
    return certs


def _parse(der: bytes) -> x509.Certificate:
    cert = x509.Certificate.load(der, strict=True)
    cert.native  # noqa: B018 - parse everything now, not at first use deep in a validation
    return cert


def bundled_anchor_dir() -> Path | None:
    """sidecar's ``certs/`` directory (the checkout's, or the wheel's copy), if present."""
    try:
        return resource_dir("certs")
    except FileNotFoundError:
        return None


def _directory_files(directory: Path) -> list[Path]:
    try:
        return sorted(
            p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in ANCHOR_SUFFIXES
        )
    except OSError as exc:
        raise AnchorError(
            f"cannot list trust anchor directory {directory}: {exc.strerror}"
        ) from exc


@dataclass(frozen=True)
class TrustAnchors:
    """An ordered, duplicate-free set of root certificates."""

    certificates: tuple[x509.Certificate, ...]

    @classmethod
    def load(
        cls,
        files: Iterable[Path] = (),
        directories: Iterable[Path] = (),
        *,
        extra: Iterable[x509.Certificate] = (),
    ) -> TrustAnchors:
        """Read *files* and every anchor file in *directories*; add *extra*."""
        found: list[x509.Certificate] = list(extra)
        for directory in directories:
            for path in _directory_files(directory):
                found.extend(load_certificates(path))
        for path in files:
            found.extend(load_certificates(path))
        return cls.of(found)

    @classmethod
    def of(cls, certs: Iterable[x509.Certificate]) -> TrustAnchors:
        unique: dict[bytes, x509.Certificate] = {}
        for cert in certs:
            unique.setdefault(cert.sha256, cert)
        return cls(tuple(unique.values()))

    def __len__(self) -> int:
        return len(self.certificates)

    def __contains__(self, cert: object) -> bool:
        return isinstance(cert, x509.Certificate) and any(
            cert.sha256 == anchor.sha256 for anchor in self.certificates
        )

    def pem_bundle(self) -> bytes:
        """All anchors as one PEM file (for ``openssl -CAfile``, curl...)."""
        return b"".join(pem.armor("CERTIFICATE", c.dump()) for c in self.certificates)

    def describe(self) -> Sequence[str]:
        return [c.subject.human_friendly for c in self.certificates]
