"""Generate (once) and load the sandbox test PKI.

The PKI is described by a certomancer YAML file written at generation time together with
the private keys it reads. Certificates are rebuilt by certomancer from that file each time
the services start; because every CA, OCSP responder and TSA key is RSA (PKCS#1 v1.5
signatures are deterministic), serial numbers are assigned in file order and validity
dates are fixed in the file, the rebuilt certificates are byte-identical to the PEM files
published next to it. :func:`load_certomancer_config` checks that they still are.

Layout of a sandbox directory::

    sandbox.json            metadata (ports, URLs, relative paths, PKCS#12 passphrase)
    certomancer.yml         the PKI description certomancer loads
    roots.pem               the trust anchor every sandbox chain ends at
    certs/                  root, intermediate, TSA and OCSP responder certificates
    keys/          (0700)   CA, OCSP responder and TSA private keys (0600)
    signers/<label>/ (0700) cert.pem, chain.pem, key.pem (0600), <label>.p12 (0600)
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from asn1crypto import pem as asn1_pem
from certomancer.registry import (
    ArchLabel,
    CertLabel,
    CertomancerConfig,
    PKIArchitecture,
    ServiceLabel,
)
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from ..errors import Misconfigured
from ..ports import free_port
from .fastkeys import install as install_fast_keys

__all__ = [
    "ARCH_LABEL",
    "SandboxError",
    "SandboxPKI",
    "SandboxSigner",
    "ensure_sandbox_pki",
    "load_certomancer_config",
]

logger = logging.getLogger(__name__)

#: Name of the certomancer PKI architecture; it is the first path segment of every URL.
ARCH_LABEL = "sandbox"
METADATA_FILE = "sandbox.json"
CONFIG_FILE = "certomancer.yml"
_FORMAT_VERSION = 1
_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S+0000"


class SandboxError(Misconfigured):
    """The sandbox PKI cannot be created, loaded or served; the message says why."""


@dataclass(frozen=True)
class SandboxSigner:
    """A sandbox physician's signing key and certificate, in the formats sidecar loads."""

    id: str
    """Signer id used in sidecar's configuration: ``sandbox-rsa`` or ``sandbox-ec``."""
    key_type: str
    """``rsa-2048`` or ``ec-p256``."""
    key_pem: Path
    """Unencrypted PKCS#8 private key (mode 0600)."""
    cert_pem: Path
    """The signer's certificate."""
    chain_pem: Path
    """Intermediate then root certificate."""
    p12: Path
    """PKCS#12 with key, certificate and chain, encrypted with :attr:`p12_passphrase`."""
    p12_passphrase: str


@dataclass(frozen=True)
class SandboxPKI:
    """A generated sandbox PKI and where its services answer once served."""

    directory: Path
    host: str
    port: int
    base_url: str
    """``http://host:port``, the prefix every URL embedded in the certificates starts with."""
    roots_pem: Path
    """The root certificate the signers, the TSA and the OCSP responders chain to."""
    certomancer_config: Path
    signers: Mapping[str, SandboxSigner]
    """Keyed by :attr:`SandboxSigner.id`."""
    tsa_url: str
    tsa_cert_pem: Path
    ocsp_urls: Mapping[str, str]
    """OCSP responder URL per CA: ``root`` and ``intermediate``."""
    crl_urls: Mapping[str, str]
    """Latest-CRL URL per CA: ``root`` and ``intermediate``."""
    ocsp_cert_pems: Mapping[str, Path]
    """OCSP responder certificate per CA: ``root`` and ``intermediate``."""
    cns_port: int
    """Where ``serve --sandbox`` runs its CNS simulator (on :attr:`host`)."""


# Certomancer labels of the signers, and what sidecar calls them.
_SIGNERS: dict[str, tuple[str, str]] = {
    # label: (sidecar id, key type)
    "signer-rsa": ("sandbox-rsa", "rsa-2048"),
    "signer-ec": ("sandbox-ec", "ec-p256"),
}
_CAS = ("root", "intermediate")
# Every key but the signers' lives in keys/; the order fixes the generation order only.
_SERVICE_KEYS = ("root", "intermediate", "ocsp-root", "ocsp-intermediate", "tsa")


def ensure_sandbox_pki(
    directory: Path, *, host: str = "127.0.0.1", port: int = 0, cns_port: int = 0
) -> SandboxPKI:
    """Return the sandbox PKI in ``directory``, generating it first if there is none.

    ``host`` and ``port`` are embedded in the certificates (AIA, CRL distribution points),
    so they only matter at generation: an existing PKI keeps the ones it was made with
    (a warning is logged if a port asked for differs). Port 0, for the PKI and for the
    CNS simulator, takes a free port at generation and records it in ``sandbox.json``,
    so that two sandboxes on one machine never ask for the same ports. A non-zero
    ``cns_port`` wins over the recorded one: nothing names the simulator's address.
    Generation happens in a sibling temporary directory renamed into place, so a
    concurrent start sees either nothing or a complete PKI. Raises
    :class:`SandboxError` on any failure.
    """
    directory = Path(directory).absolute()
    for name, value in (("port", port), ("cns_port", cns_port)):
        if not (isinstance(value, int) and 0 <= value < 65536):
            raise SandboxError(f"sandbox {name} must be between 0 and 65535, not {value!r}")
    try:
        if not (directory / METADATA_FILE).exists():
            _generate_into(directory, host=host, port=port, cns_port=cns_port)
        elif "cns_port" not in json.loads((directory / METADATA_FILE).read_text("utf-8")):
            _record_cns_port(directory, cns_port)  # made before ports were recorded
    except OSError as exc:
        raise SandboxError(
            f"cannot create the sandbox PKI in {directory}: {exc.strerror or exc}"
        ) from exc
    except (ValueError, KeyError, TypeError):
        pass  # a damaged sandbox.json: _load says what is wrong
    pki = _load(directory)
    if cns_port:
        pki = replace(pki, cns_port=cns_port)
    if pki.host != host or port not in (0, pki.port):
        logger.warning(
            "sandbox PKI in %s was generated for %s and keeps using it (asked for %s:%s); "
            "delete the directory to regenerate it",
            directory,
            pki.base_url,
            host,
            port,
        )
    return pki


def load_certomancer_config(pki: SandboxPKI) -> PKIArchitecture:
    """Load the PKI's certomancer architecture, rebuilding its certificates.

    Checks that the rebuilt certificates are byte-identical to the published PEM files
    (they would differ after a hand edit of the config or a certomancer upgrade that
    encodes certificates differently) and raises :class:`SandboxError` otherwise.
    This does CPU work (RSA signatures): call it off the event loop.
    """
    install_fast_keys()  # each key parsed once: here, and by every service later
    try:
        config = CertomancerConfig.from_file(
            str(pki.certomancer_config), external_url_prefix=pki.base_url
        )
        arch = config.get_pki_arch(ArchLabel(ARCH_LABEL))
        published: dict[str, Path] = {
            "root": pki.roots_pem,
            "tsa": pki.tsa_cert_pem,
            **{f"ocsp-{ca}": path for ca, path in pki.ocsp_cert_pems.items()},
        }
        for label, (signer_id, _) in _SIGNERS.items():
            published[label] = pki.signers[signer_id].cert_pem
        for label, path in published.items():
            rebuilt = arch.get_cert(CertLabel(label)).dump()
            _, _, stored = asn1_pem.unarmor(path.read_bytes())
            if rebuilt != stored:
                raise SandboxError(
                    f"the sandbox PKI in {pki.directory} no longer rebuilds the certificate "
                    f"in {path} (was {pki.certomancer_config.name} or a key edited, or "
                    "certomancer upgraded?); delete the directory to regenerate the PKI"
                )
    except SandboxError:
        raise
    except OSError as exc:
        raise SandboxError(
            f"cannot read the sandbox PKI in {pki.directory}: {exc.strerror or exc}"
        ) from exc
    except Exception as exc:  # certomancer raises plain ConfigurationError/ValueError
        raise SandboxError(
            f"the sandbox PKI in {pki.directory} is damaged ({exc}); "
            "delete the directory to regenerate it"
        ) from exc
    return arch


def _base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _record_cns_port(directory: Path, cns_port: int) -> None:
    """Add a CNS simulator port to the ``sandbox.json`` of a sandbox made without one."""
    meta_path = directory / METADATA_FILE
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["cns_port"] = cns_port or free_port(meta["host"], avoid=(meta["port"],))
    tmp = meta_path.with_name(f".{METADATA_FILE}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, meta_path)  # atomic: a concurrent start reads the old or the new


def _generate_into(directory: Path, *, host: str, port: int, cns_port: int) -> None:
    if directory.exists() and any(directory.iterdir()):
        if (directory / METADATA_FILE).exists():
            return  # a concurrent start published its PKI since the caller looked
        raise SandboxError(
            f"{directory} exists but holds no sandbox PKI ({METADATA_FILE} is missing); "
            "remove it or choose another directory"
        )
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        _generate(tmp, host=host, port=port, cns_port=cns_port)
        _publish(tmp, directory)
    finally:
        # After a successful rename tmp no longer exists; otherwise it is debris.
        shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, directory: Path) -> None:
    """Move a complete PKI into place unless a concurrent start got there first."""
    try:
        # POSIX rename atomically replaces an empty directory; Windows refuses.
        os.rename(tmp, directory)
        return
    except OSError:
        if (directory / METADATA_FILE).exists():
            return  # another process won the race: use its PKI, drop ours
    try:
        directory.rmdir()  # empty placeholder (Windows): remove it and try once more
        os.rename(tmp, directory)
    except OSError:
        if not (directory / METADATA_FILE).exists():
            raise


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True)
    path.chmod(0o700)  # mkdir's mode is masked by the umask
    return path


def _key_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _generate(root: Path, *, host: str, port: int, cns_port: int) -> None:
    install_fast_keys()
    # Ports are taken free now, not when served: the certificates name the PKI's.
    port = port or free_port(host, avoid=(cns_port,))
    cns_port = cns_port or free_port(host, avoid=(port,))
    base_url = _base_url(host, port)
    # Distinct CA names per PKI: two sandboxes (trusted and untrusted) must not share
    # issuer names, or issuer+serial keyed caches (OCSP, path building) would mix them.
    instance = secrets.token_hex(3)
    # Backdated a day so a slightly slow clock elsewhere still sees valid certificates.
    not_before = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    not_before -= timedelta(days=1)

    keys_dir = _private_dir(root / "keys")
    key_paths: dict[str, str] = {}
    for label in _SERVICE_KEYS:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_private(keys_dir / f"{label}.key.pem", _key_pem(key))
        key_paths[label] = f"keys/{label}.key.pem"
    for label, (_, key_type) in _SIGNERS.items():
        signer_dir = _private_dir(root / "signers" / label)
        signer_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
        if key_type == "rsa-2048":
            signer_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            signer_key = ec.generate_private_key(ec.SECP256R1())
        _write_private(signer_dir / "key.pem", _key_pem(signer_key))
        key_paths[label] = f"signers/{label}/key.pem"

    config_path = root / CONFIG_FILE
    config = _certomancer_config(base_url, instance, not_before, key_paths)
    config_path.write_text(
        "# Sandbox test PKI generated by sidecar; not for real signatures.\n"
        "# Certificates are rebuilt from this file at each start: do not edit it.\n"
        + yaml.safe_dump(config, sort_keys=False),
        encoding="utf-8",
    )

    arch = CertomancerConfig.from_file(str(config_path), external_url_prefix=base_url).get_pki_arch(
        ArchLabel(ARCH_LABEL)
    )

    def der(label: str) -> bytes:
        return arch.get_cert(CertLabel(label)).dump()

    def pem(*labels: str) -> bytes:
        return b"".join(asn1_pem.armor("CERTIFICATE", der(label)) for label in labels)

    certs_dir = root / "certs"
    certs_dir.mkdir()
    (root / "roots.pem").write_bytes(pem("root"))
    for label in ("intermediate", "tsa", "ocsp-root", "ocsp-intermediate"):
        (certs_dir / f"{label}.pem").write_bytes(pem(label))

    # A sandbox secret kept in clear in sandbox.json on purpose: the keys it protects
    # are test keys, and tools and vendors' tests need to open the file unattended.
    passphrase = secrets.token_urlsafe(16)
    chain = [x509.load_der_x509_certificate(der(label)) for label in ("intermediate", "root")]
    signers_meta: dict[str, dict[str, str]] = {}
    for label, (signer_id, key_type) in _SIGNERS.items():
        signer_dir = root / "signers" / label
        (signer_dir / "cert.pem").write_bytes(pem(label))
        (signer_dir / "chain.pem").write_bytes(pem("intermediate", "root"))
        private_key = serialization.load_pem_private_key(
            (signer_dir / "key.pem").read_bytes(), password=None
        )
        assert isinstance(private_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
        p12 = pkcs12.serialize_key_and_certificates(
            name=signer_id.encode(),
            key=private_key,
            cert=x509.load_der_x509_certificate(der(label)),
            cas=chain,
            encryption_algorithm=serialization.BestAvailableEncryption(passphrase.encode()),
        )
        _write_private(signer_dir / f"{label}.p12", p12)
        signers_meta[signer_id] = {
            "label": label,
            "key_type": key_type,
            "key_pem": f"signers/{label}/key.pem",
            "cert_pem": f"signers/{label}/cert.pem",
            "chain_pem": f"signers/{label}/chain.pem",
            "p12": f"signers/{label}/{label}.p12",
            "p12_passphrase": passphrase,
        }

    services = arch.service_registry
    metadata: dict[str, Any] = {
        "format": _FORMAT_VERSION,
        "comment": "sidecar sandbox test PKI: test keys only, never for real signatures",
        "instance": instance,
        "created": datetime.now(UTC).strftime(_DATE_FORMAT),
        "host": host,
        "port": port,
        "cns_port": cns_port,
        "base_url": base_url,
        "arch": ARCH_LABEL,
        "certomancer_config": CONFIG_FILE,
        "roots_pem": "roots.pem",
        "tsa_url": services.get_tsa_info(ServiceLabel("tsa")).url,
        "tsa_cert_pem": "certs/tsa.pem",
        "ocsp_urls": {ca: services.get_ocsp_info(ServiceLabel(ca)).url for ca in _CAS},
        "crl_urls": {
            ca: services.get_crl_repo_info(ServiceLabel(ca)).latest_external_url for ca in _CAS
        },
        "ocsp_cert_pems": {ca: f"certs/ocsp-{ca}.pem" for ca in _CAS},
        "signers": signers_meta,
    }
    (root / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    # Public material (roots.pem, certs/) is readable by others, e.g. a vendor's test
    # runner under another account; keys/ and signers/* stay 0700.
    root.chmod(0o755)


def _certomancer_config(
    base_url: str, instance: str, not_before: datetime, key_paths: Mapping[str, str]
) -> dict[str, Any]:
    """The certomancer description of the sandbox PKI (plain data, dumped as YAML)."""

    def validity(days: int) -> dict[str, str]:
        return {
            "valid-from": not_before.strftime(_DATE_FORMAT),
            "valid-to": (not_before + timedelta(days=days)).strftime(_DATE_FORMAT),
        }

    def key_usage(*usages: str) -> dict[str, Any]:
        return {
            "id": "key_usage",
            "critical": True,
            "smart-value": {"schema": "key-usage", "params": list(usages)},
        }

    def revocation_pointers(ca: str) -> list[dict[str, Any]]:
        # Where a relying party fetches this certificate's status and its issuer.
        return [
            {
                "id": "crl_distribution_points",
                "smart-value": {"schema": "crl-dist-url", "params": {"crl-repo-names": [ca]}},
            },
            {
                "id": "authority_information_access",
                "smart-value": {
                    "schema": "aia-urls",
                    "params": {"ocsp-responder-names": [ca], "ca-issuer-links": [{"repo": ca}]},
                },
            },
        ]

    def ocsp_responder(ca: str) -> dict[str, Any]:
        return {
            "issuer": ca,
            "validity": validity(3 * 365),
            "extensions": [
                key_usage("digital_signature"),
                {"id": "extended_key_usage", "critical": True, "value": ["ocsp_signing"]},
                # Responders are not themselves checked for revocation (RFC 6960 4.2.2.2.1).
                {"id": "ocsp_no_check"},
            ],
        }

    def signer() -> dict[str, Any]:
        return {
            "issuer": "intermediate",
            "validity": validity(3 * 365),
            "extensions": [
                key_usage("digital_signature", "non_repudiation"),
                *revocation_pointers("intermediate"),
            ],
        }

    return {
        "external-url-prefix": base_url,
        "keysets": {
            ARCH_LABEL: {
                "path-prefix": ".",
                "keys": {label: {"path": path} for label, path in key_paths.items()},
            }
        },
        "pki-architectures": {
            ARCH_LABEL: {
                "keyset": ARCH_LABEL,
                "entity-defaults": {"country-name": "LU", "organization-name": "Sidecar sandbox"},
                "entities": {
                    "root": {"common-name": f"Sidecar Sandbox Root CA {instance}"},
                    "intermediate": {"common-name": f"Sidecar Sandbox Issuing CA {instance}"},
                    "ocsp-root": {"common-name": f"Sidecar Sandbox Root OCSP {instance}"},
                    "ocsp-intermediate": {"common-name": f"Sidecar Sandbox OCSP {instance}"},
                    "tsa": {"common-name": f"Sidecar Sandbox TSA {instance}"},
                    "signer-rsa": {
                        "organization-name": "Sandbox practice",
                        "common-name": "Dr Alice Sandbox",
                        "given-name": "Alice",
                        "surname": "Sandbox",
                    },
                    "signer-ec": {
                        "organization-name": "Sandbox practice",
                        "common-name": "Dr Bruno Sandbox",
                        "given-name": "Bruno",
                        "surname": "Sandbox",
                    },
                },
                "certs": {
                    "root": {
                        "subject": "root",
                        "subject-key": "root",
                        "issuer": "root",
                        "authority-key": "root",
                        "validity": validity(3652),
                        "extensions": [
                            {"id": "basic_constraints", "critical": True, "value": {"ca": True}},
                            key_usage("key_cert_sign", "crl_sign"),
                        ],
                    },
                    "intermediate": {
                        "issuer": "root",
                        "validity": validity(3287),
                        "extensions": [
                            {
                                "id": "basic_constraints",
                                "critical": True,
                                "value": {"ca": True, "path-len-constraint": 0},
                            },
                            key_usage("key_cert_sign", "crl_sign"),
                            *revocation_pointers("root"),
                        ],
                    },
                    "ocsp-root": ocsp_responder("root"),
                    "ocsp-intermediate": ocsp_responder("intermediate"),
                    "tsa": {
                        "issuer": "intermediate",
                        "validity": validity(5 * 365),
                        "extensions": [
                            key_usage("digital_signature"),
                            # openssl ts -verify rejects a TSA whose EKU is not critical.
                            {
                                "id": "extended_key_usage",
                                "critical": True,
                                "value": ["time_stamping"],
                            },
                            *revocation_pointers("intermediate"),
                        ],
                    },
                    "signer-rsa": signer(),
                    "signer-ec": signer(),
                },
                "services": {
                    "ocsp": {
                        ca: {
                            "for-issuer": ca,
                            "responder-cert": f"ocsp-{ca}",
                            "signing-key": f"ocsp-{ca}",
                        }
                        for ca in _CAS
                    },
                    "crl-repo": {
                        "root": {
                            "for-issuer": "root",
                            "signing-key": "root",
                            "simulated-update-schedule": "P90D",
                        },
                        "intermediate": {
                            "for-issuer": "intermediate",
                            "signing-key": "intermediate",
                            "simulated-update-schedule": "P7D",
                        },
                    },
                    "cert-repo": {
                        ca: {"for-issuer": ca, "publish-issued-certs": True} for ca in _CAS
                    },
                    "time-stamping": {"tsa": {"signing-key": "tsa", "signing-cert": "tsa"}},
                },
            }
        },
    }


def _load(directory: Path) -> SandboxPKI:
    """Read ``sandbox.json``; paths in it are relative so the directory can be moved."""
    meta_path = directory / METADATA_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SandboxError(f"cannot read {meta_path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise SandboxError(
            f"{meta_path} is not valid JSON ({exc}); delete {directory} to regenerate the PKI"
        ) from exc
    try:
        if meta["format"] != _FORMAT_VERSION:
            raise SandboxError(
                f"{meta_path} has format {meta['format']!r}, this sidecar reads "
                f"{_FORMAT_VERSION}; delete {directory} to regenerate the PKI"
            )
        signers = {
            signer_id: SandboxSigner(
                id=signer_id,
                key_type=entry["key_type"],
                key_pem=directory / entry["key_pem"],
                cert_pem=directory / entry["cert_pem"],
                chain_pem=directory / entry["chain_pem"],
                p12=directory / entry["p12"],
                p12_passphrase=entry["p12_passphrase"],
            )
            for signer_id, entry in meta["signers"].items()
        }
        pki = SandboxPKI(
            directory=directory,
            host=meta["host"],
            port=int(meta["port"]),
            base_url=meta["base_url"],
            roots_pem=directory / meta["roots_pem"],
            certomancer_config=directory / meta["certomancer_config"],
            signers=MappingProxyType(signers),
            tsa_url=meta["tsa_url"],
            tsa_cert_pem=directory / meta["tsa_cert_pem"],
            ocsp_urls=MappingProxyType(dict(meta["ocsp_urls"])),
            crl_urls=MappingProxyType(dict(meta["crl_urls"])),
            ocsp_cert_pems=MappingProxyType(
                {ca: directory / path for ca, path in meta["ocsp_cert_pems"].items()}
            ),
            cns_port=int(meta["cns_port"]),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise SandboxError(
            f"{meta_path} is incomplete ({exc!r}); delete {directory} to regenerate the PKI"
        ) from exc
    missing = [
        path
        for path in (
            pki.roots_pem,
            pki.certomancer_config,
            pki.tsa_cert_pem,
            *pki.ocsp_cert_pems.values(),
            *(p for s in signers.values() for p in (s.key_pem, s.cert_pem, s.chain_pem, s.p12)),
        )
        if not path.is_file()
    ]
    if missing or {sid for sid, _ in _SIGNERS.values()} - signers.keys():
        raise SandboxError(
            f"the sandbox PKI in {directory} is incomplete (missing "
            f"{', '.join(str(p) for p in missing) or 'signers'}); "
            "delete the directory to regenerate it"
        )
    return pki
