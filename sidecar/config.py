"""The daemon's configuration: one TOML file, a default for every setting.

Each section is a frozen dataclass; the loader maps TOML keys to fields by name,
checks their types, and refuses unknown keys, so that a typo in a sysadmin's file
is reported at start (file, key, what is wrong) instead of being silently ignored.
Later subsystems add their section to :class:`Settings` and nothing else.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import Misconfigured
from .keys.key_settings import KeyConfig
from .ratelimit import parse_rate

__all__ = [
    "CnsSettings",
    "ConfigError",
    "LimitSettings",
    "ListSettings",
    "LogSettings",
    "SandboxSettings",
    "ServerSettings",
    "Settings",
    "SigningSettings",
    "TrustSettings",
    "TsaSettings",
    "load_settings",
    "parse_size",
]


class ConfigError(Misconfigured):
    """A configuration file that cannot be used, with where and why."""

    def __init__(self, file: Path | None, key: str | None, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        where = str(file) if file else "configuration"
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")


_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$", re.IGNORECASE)
_UNITS = {
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_size(value: object) -> int:
    """``1048576``, ``"1 MiB"`` or ``"20MB"`` → bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        size = int(match.group(1)) * _UNITS[(match.group(2) or "b").lower()]
    else:
        raise ValueError('expected a size such as 1048576 or "20 MiB"')
    if size <= 0:
        raise ValueError("must be more than 0 bytes")
    return size


def _port(value: int) -> None:
    if not 1 <= value <= 65535:
        raise ValueError(f"must be between 1 and 65535 (got {value})")


def default_workers() -> int:
    """Worker processes by default (PDF steps and XAdES drafts share them): one per CPU
    core beyond the first, which the daemon's event loop keeps busy (HTTP, TSA,
    revocation, the key), one to four. On 2 cores one worker: measured under the mixed
    load of issue 19, it signed as many forms as two, at a lower p99, ~30 MB lighter."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def _positive(value: float) -> None:
    if value <= 0:
        raise ValueError(f"must be more than 0 (got {value})")


def _positive_if_set(value: float | None) -> None:
    if value is not None:
        _positive(value)


def _not_negative(value: float | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"must be 0 or more (got {value})")


def _origin(value: tuple[str, ...]) -> None:
    for origin in value:
        if origin == "*" or not re.match(r"^https?://[^/\s]+$", origin):
            raise ValueError(
                f"{origin!r} is not an origin: write scheme://host[:port], no path, no wildcard"
            )


def _rate(value: str | None) -> None:
    if value is not None:
        parse_rate(value)


def _size_field(default: int) -> Any:
    return field(default=default, metadata={"parse": parse_size})


@dataclass(frozen=True)
class ServerSettings:
    """``[server]``: where the daemon listens and whom it lets in."""

    host: str = "127.0.0.1"
    port: int = field(default=7420, metadata={"check": _port})
    #: A shared hospital deployment may bind a LAN address, and then only with TLS.
    allow_remote: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: CA certificate(s) (PEM) whose client certificates the TLS listener accepts
    #: (mTLS). A client presenting one whose fingerprint the clients file knows
    #: (``sidecar token create NAME --cert-fingerprint``) needs no token.
    client_ca: Path | None = None
    #: With ``client_ca``: refuse, in the TLS handshake, a client without a certificate.
    client_cert_required: bool = False
    #: Requests per client (``"N/s"``, ``"N/min"``, ``"N/h"``: a token bucket of N), or
    #: no limit; a client's own ``rate_limit`` in the clients file wins. Health and
    #: metrics are never limited.
    rate_limit: str | None = field(default=None, metadata={"check": _rate})
    #: Extra ``Host`` header names accepted besides the loopback names.
    allowed_hosts: tuple[str, ...] = ()
    #: Browser origins allowed to call the API (``Origin`` header); none by default.
    allowed_origins: tuple[str, ...] = field(default=(), metadata={"check": _origin})
    #: Seconds a graceful stop waits for requests under way.
    shutdown_timeout: float = field(default=30.0, metadata={"check": _positive})
    #: Seconds a client has to send a whole request head (line and headers), from
    #: the connection's start or a later request's first byte; then 408 and close.
    header_timeout: float = field(default=60.0, metadata={"check": _positive})
    #: Seconds a request body may stall (no byte received) before 408 and close.
    body_timeout: float = field(default=60.0, metadata={"check": _positive})
    #: Seconds an idle keep-alive connection is kept open between requests. Longer
    #: than the idle timeouts of common HTTP clients (.NET 1-2 min, Go 90 s), so that
    #: they, not the daemon, close it and never reuse a connection just closed.
    keepalive_timeout: float = field(default=300.0, metadata={"check": _positive})

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)


@dataclass(frozen=True)
class LimitSettings:
    """``[limits]``: the largest request body accepted, per kind of route."""

    json: int = _size_field(64 * 1024)
    xml: int = _size_field(20 * 1024**2)
    pdf: int = _size_field(50 * 1024**2)
    form: int = _size_field(70 * 1024**2)
    timestamp: int = _size_field(1024**2)
    #: ``POST /v1/batches``: many documents, base64 in JSON (a third larger than raw).
    batch: int = _size_field(200 * 1024**2)


@dataclass(frozen=True)
class LogSettings:
    """``[log]``: what is logged, how, and where (stderr when no file)."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"
    file: Path | None = None
    access: bool = True


def _port_or_free(value: int) -> None:
    if value != 0:
        _port(value)


@dataclass(frozen=True)
class SandboxSettings:
    """``[sandbox]``: where ``serve --sandbox`` serves its test PKI (TSA, OCSP, CRL)."""

    host: str = "127.0.0.1"
    #: Fixed when the sandbox is first generated: its certificates embed the URLs.
    #: 0: a free port, taken then and recorded in the sandbox's ``sandbox.json``.
    port: int = field(default=0, metadata={"check": _port_or_free})
    #: Also offer the sandbox RSA key on a SoftHSM2 token (PKCS#11) when SoftHSM2 is installed.
    softhsm: bool = True
    #: Where ``serve --sandbox`` runs the CNS simulator (loopback, same process).
    #: 0: the port recorded in ``sandbox.json`` (a free one taken at generation).
    cns_port: int = field(default=0, metadata={"check": _port_or_free})


@dataclass(frozen=True)
class UiSettings:
    """``[ui]``: the language of what a person reads (status page, CLI, doctor)."""

    #: ``auto``: the browser's (Accept-Language) for the page, the OS locale for the CLI.
    language: Literal["auto", "en", "fr", "de"] = "auto"


def _url(value: str) -> None:
    if value and not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
        raise ValueError(f"{value!r} is not an http(s) URL")


def _nonnegative(value: float) -> None:
    if value < 0:
        raise ValueError(f"must not be negative (got {value})")


@dataclass(frozen=True)
class CnsBaseUrls:
    """``[cns.base_urls]``: the CNS endpoint of each environment ("" = not configured).

    In sandbox mode an empty ``sandbox`` URL means the built-in simulator.
    """

    sandbox: str = field(default="", metadata={"check": _url})
    test: str = field(default="", metadata={"check": _url})
    production: str = field(default="", metadata={"check": _url})


@dataclass(frozen=True)
class CnsOperation:
    """How one operation goes on the wire: method and path (``{uuid}`` is substituted)."""

    method: Literal["GET", "POST", "PUT", "DELETE"] = "POST"
    path: str = "/"


@dataclass(frozen=True)
class CnsWire:
    """``[cns.wire]``: the mapping of our operations onto the CNS's web services.

    The CNS's real contract is confidential; the defaults are the simulator's
    (documented in ``sidecar/cns/simulator.py``), and the real one is slotted in here.
    """

    deposit: CnsOperation = field(default_factory=lambda: CnsOperation("POST", "/fee-notes"))
    cancel: CnsOperation = field(
        default_factory=lambda: CnsOperation("DELETE", "/fee-notes/{uuid}")
    )
    pid_simulation: CnsOperation = field(
        default_factory=lambda: CnsOperation("POST", "/pid/simulations")
    )
    pid_validation: CnsOperation = field(
        default_factory=lambda: CnsOperation("POST", "/pid/validations")
    )
    pid_contestation: CnsOperation = field(
        default_factory=lambda: CnsOperation("POST", "/pid/contestations")
    )
    #: What became of a message whose answer was lost, asked by its idempotency key
    #: (``{uuid}``) before the daemon gives up on it (see ``CnsTransport.lookup``).
    lookup: CnsOperation = field(default_factory=lambda: CnsOperation("GET", "/messages/{uuid}"))
    #: What the reachability health check asks (any answer below 500 counts as up).
    health: CnsOperation = field(default_factory=lambda: CnsOperation("GET", "/health"))
    #: The header carrying the message's UUID, the CNS's idempotency key.
    idempotency_header: str = "Idempotency-Key"
    content_type: str = "application/xml"


@dataclass(frozen=True)
class CnsTls:
    """``[cns.tls]``: the client certificate presented to the CNS, and whom to trust."""

    #: PEM certificate (chain) and key, or a PKCS#12 file (not both).
    client_cert: Path | None = None
    client_key: Path | None = None
    pkcs12: Path | None = None
    #: Environment variable holding the PKCS#12 passphrase (never the passphrase itself).
    pkcs12_passphrase_env: str = ""
    #: Or the entry holding it in the OS secret store (service "sidecar").
    pkcs12_passphrase_keyring: str = ""
    #: CA bundle for the CNS's server certificate; the system store when absent.
    ca_file: Path | None = None


@dataclass(frozen=True)
class CnsAuth:
    """``[cns.auth]``: the bearer token the eSanté platform wants, if any."""

    mode: Literal["none", "bearer", "oauth2"] = "none"
    #: ``bearer``: environment variable, file or OS secret store entry (service
    #: "sidecar") holding the token.
    token_env: str = ""
    token_file: Path | None = None
    token_keyring: str = ""
    #: ``oauth2``: client-credentials grant (RFC 6749 section 4.4).
    token_url: str = field(default="", metadata={"check": _url})
    client_id: str = ""
    client_secret_env: str = ""
    client_secret_file: Path | None = None
    client_secret_keyring: str = ""
    scope: str = ""


@dataclass(frozen=True)
class CnsSettings:
    """``[cns]``: forwarding to the CNS (transport, outbox, retries)."""

    environment: Literal["sandbox", "test", "production"] = "sandbox"
    base_urls: CnsBaseUrls = field(default_factory=CnsBaseUrls)
    wire: CnsWire = field(default_factory=CnsWire)
    tls: CnsTls = field(default_factory=CnsTls)
    auth: CnsAuth = field(default_factory=CnsAuth)
    connect_timeout: float = field(default=5.0, metadata={"check": _positive})
    #: Seconds for one outbox delivery, and for one synchronous PID v2 call.
    delivery_timeout: float = field(default=30.0, metadata={"check": _positive})
    pid_timeout: float = field(default=20.0, metadata={"check": _positive})
    #: Delivery attempts before a message is ``failed`` (the retry budget).
    max_attempts: int = field(default=12, metadata={"check": _positive})
    #: Exponential backoff: first delay, factor, ceiling (seconds), and the share
    #: of each delay drawn at random so that many daemons do not retry in step.
    backoff_initial: float = field(default=2.0, metadata={"check": _positive})
    backoff_factor: float = field(default=2.0, metadata={"check": _positive})
    backoff_max: float = field(default=600.0, metadata={"check": _positive})
    backoff_jitter: float = field(default=0.5, metadata={"check": _nonnegative})
    #: Deliveries under way at once.
    workers: int = field(default=4, metadata={"check": _positive})
    #: Seconds a stopping daemon lets deliveries under way finish before requeueing them.
    drain_timeout: float = field(default=10.0, metadata={"check": _positive})
    #: Accept a deposit signed at B-B when the TSA is unreachable, held
    #: ``awaiting_timestamp`` until it is upgraded to B-LT.
    defer_timestamp: bool = False
    #: XPath 1.0 to a CNS message's UUID (text or attribute), above any profile's; unset:
    #: the profile's ``[uuid] xpath`` for its documents, else the first element named
    #: ``UUID`` or ``MessageId``, else a ``uuid``/``Id`` attribute of the root
    #: (:class:`sidecar.cns.documents.MessageRule`).
    uuid_xpath: str = ""
    #: The outbox database; ``<data dir>/outbox.sqlite3`` when absent. A
    #: ``postgresql://`` URL: the PostgreSQL outbox (and audit journal) several daemons
    #: share.
    outbox: Path | str | None = None
    #: XSD the sandbox's CNS simulator checks fee notes against (none: no XSD check).
    simulator_xsd: Path | None = None


def _tsa_url(value: str) -> None:
    if not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
        raise ValueError(f"{value!r} is not an http(s) URL")


def _oid(value: str | None) -> None:
    if value is not None and not re.match(r"^[0-2](\.(0|[1-9][0-9]*))+$", value):
        raise ValueError(f"{value!r} is not a dotted object identifier such as 1.2.3.4")


@dataclass(frozen=True)
class TsaSettings:
    """``[[trust.tsa]]``: one RFC 3161 time-stamping authority, tried in file order."""

    url: str = field(default="", metadata={"check": _tsa_url})
    #: Seconds one attempt may take (connect, send, answer).
    timeout: float = field(default=10.0, metadata={"check": _positive})
    #: Attempts on a refused/reset connection or an HTTP 5xx before the next TSA
    #: (a timeout is never retried: it already cost its budget).
    attempts: int = field(default=2, metadata={"check": _positive})
    #: TSA policy OID requested (``reqPolicy``) and demanded in the reply; the
    #: qualified policy comes with the CNS technical documentation.
    policy: str | None = field(default=None, metadata={"check": _oid})
    #: HTTP basic auth: the user, and where the password is (never the password itself):
    #: an environment variable, a file, or an entry of the OS secret store (service
    #: "sidecar", as the keys' PINs).
    username: str = ""
    password_env: str = ""
    password_file: Path | None = None
    password_keyring: str = ""
    #: TLS client certificate (PEM, chain allowed) and its unencrypted key (PEM).
    client_cert: Path | None = None
    client_key: Path | None = None


@dataclass(frozen=True)
class BreakerSettings:
    """``[trust.breaker]``: when a failing TSA is skipped, and for how long."""

    #: Consecutive failures (connection, timeout, bad reply) that open the circuit.
    failure_threshold: int = field(default=3, metadata={"check": _positive})
    #: Seconds an open circuit skips the TSA before one probe request is let through.
    cool_down: float = field(default=30.0, metadata={"check": _positive})
    #: Seconds between two attempts at the same TSA.
    retry_delay: float = 0.2


@dataclass(frozen=True)
class RevocationSettings:
    """``[trust.revocation]``: OCSP/CRL fetching and the cache (memory + SQLite)."""

    #: Seconds one OCSP or CRL request may take.
    timeout: float = field(default=10.0, metadata={"check": _positive})
    #: The cache database; ``<data dir>/revocation.sqlite3`` when absent.
    cache_file: Path | None = None
    #: How long an OCSP response without ``nextUpdate`` is reused (seconds).
    default_validity: float = field(default=300.0, metadata={"check": _positive})
    #: Ceiling on how long any response or CRL is reused, whatever its nextUpdate says.
    max_validity: float = field(default=7 * 86400.0, metadata={"check": _positive})
    #: A cached entry is refreshed this many seconds before its nextUpdate; until
    #: nextUpdate itself it still serves when the responder is down.
    refresh_margin: float = 60.0


def _territories(value: tuple[str, ...]) -> None:
    for code in value:
        if not re.match(r"^[A-Za-z]{2}$", code):
            raise ValueError(f"{code!r} is not a two-letter territory code such as LU")


@dataclass(frozen=True)
class ListSettings:
    """``[trust.lists]``: the EU trusted lists (ETSI TS 119 612), cached and used offline."""

    #: Fetch, cache and use the lists (anchors from CA/QC and TSA/QTST services,
    #: qualification in verify reports, the check at signing).
    enabled: bool = False
    #: Where the EU list of trusted lists is published.
    lotl_url: str = field(
        default="https://ec.europa.eu/tools/lotl/eu-lotl.xml", metadata={"check": _url}
    )
    #: The member states' lists used (two-letter codes as in the LOTL).
    territories: tuple[str, ...] = field(default=("LU",), metadata={"check": _territories})
    #: PEM file of the certificates the LOTL may be signed with (default: those
    #: bundled with pyHanko, from the Official Journal).
    lotl_signers: Path | None = None
    #: Where the lists are kept; ``<data dir>/trusted-lists`` when absent.
    cache_dir: Path | None = None
    #: Seconds between two refreshes while the daemon runs.
    refresh_interval: float = field(default=86400.0, metadata={"check": _positive})
    #: Seconds one download may take.
    timeout: float = field(default=60.0, metadata={"check": _positive})
    #: Seconds a list past its NextUpdate is still used, with a warning; after that it
    #: is refused (0: refused as soon as it is past NextUpdate).
    stale_grace: float = field(default=7 * 86400.0, metadata={"check": _not_negative})
    #: At signing, a TSA that is not a granted QTST or a signer whose chain reaches no
    #: CA/QC on the lists: ``warn`` (sign, and say so) or ``refuse`` (do not sign).
    at_signing: Literal["warn", "refuse"] = "warn"


@dataclass(frozen=True)
class TrustSettings:
    """``[trust]``: trust anchors, TSAs (``[[trust.tsa]]``), revocation data."""

    #: PEM/DER files holding trust anchors (INCERT's TSA root, LuxTrust roots...).
    anchors: tuple[Path, ...] = ()
    #: A directory of ``*.pem``/``*.crt``/``*.cer``/``*.der`` anchors.
    anchors_dir: Path | None = None
    #: Also trust the anchors bundled in sidecar's ``certs/``.
    bundled_anchors: bool = True
    #: Largest accepted difference between a TSA's genTime and the local clock (seconds).
    clock_skew: float = field(default=60.0, metadata={"check": _positive})
    #: In order of preference; none in sandbox mode means the sandbox TSA.
    tsa: tuple[TsaSettings, ...] = ()
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    revocation: RevocationSettings = field(default_factory=RevocationSettings)
    lists: ListSettings = field(default_factory=ListSettings)


@dataclass(frozen=True)
class SigningSettings:
    """``[signing]``: PDF signing defaults, form profiles, and bounds on reading PDFs."""

    #: Level of ``POST /v1/pdf/sign`` without ``?level=`` (the DSR asks B-LT).
    pdf_level: Literal["B-B", "B-T", "B-LT", "B-LTA"] = "B-LT"
    #: Directories of profile TOML files, after the bundled ``profiles/``; a profile
    #: here replaces a bundled one of the same name (e.g. the CNS's fee-note XSD).
    profile_dirs: tuple[Path, ...] = ()
    #: A caller's PDF is parsed in a worker process with these bounds.
    pdf_max_objects: int = field(default=200_000, metadata={"check": _positive})
    pdf_parse_timeout: float = field(default=10.0, metadata={"check": _positive})
    pdf_worker_memory: int = field(default=1024**3, metadata={"parse": parse_size})
    #: Worker processes (see :func:`default_workers`); the XAdES drafts share them.
    pdf_workers: int = field(default_factory=default_workers, metadata={"check": _positive})
    #: Seconds one document's signatures (PDF or XML) may take to verify, in the
    #: memory-capped workers; what is not checked by then is reported INDETERMINATE.
    verify_timeout: float = field(default=30.0, metadata={"check": _positive})
    #: Level of ``POST /v1/xml/sign`` without ``?level=`` or a profile's level.
    xml_level: Literal["B-B", "B-T", "B-LT", "B-LTA"] = "B-LT"
    #: Worker processes that draft XAdES signatures (the CPU-bound part; the key
    #: signs in the daemon): unset, :func:`default_workers` (one on 2 cores: one
    #: client's heavy document then holds the others' drafts up to its deadline;
    #: set 2 to keep one free); 0, none (drafted in a thread of the daemon's
    #: process: no deadline).
    #: They are the PDF workers' processes (one pool of ``max(xml_workers,
    #: pdf_workers)``, under ``pdf_worker_memory``): drafts and PDF steps share them.
    xml_workers: int | None = field(default=None, metadata={"check": _not_negative})
    #: Seconds a drafting worker may spend on one document; past it, the worker is
    #: killed and replaced, and the caller gets 422 xml_limits.
    xml_draft_timeout: float = field(default=30.0, metadata={"check": _positive})
    #: How many drafting workers one client may hold at once; unset: all but one
    #: (so that another client always finds one free).
    xml_workers_per_client: int | None = field(default=None, metadata={"check": _positive_if_set})
    #: Seconds without a step after which an XAdES drafting or PDF reading worker
    #: ends (a practice PC is idle most of the day); they start on need (none at
    #: start-up), paying a few hundred milliseconds once. 0: they run until the daemon
    #: stops (and the drafting workers start with it).
    worker_idle_exit: float = field(default=300.0, metadata={"check": _not_negative})
    #: Namespace declarations a signed or verified XML document may have, in all
    #: and in scope at one element (canonicalising costs the square of the latter).
    xml_max_namespaces: int = field(default=1000, metadata={"check": _positive})
    xml_max_namespaces_in_scope: int = field(default=64, metadata={"check": _positive})
    #: XAdES SignaturePolicyIdentifier (the CNS may demand one): the policy's OID,
    #: the base64 digest of the policy document, its algorithm and where it is published.
    xml_policy_id: str | None = None
    xml_policy_digest: str | None = None
    xml_policy_digest_algorithm: Literal["sha256", "sha384", "sha512"] = "sha256"
    xml_policy_uri: str | None = None
    #: XAdES SignerRole/ClaimedRoles, e.g. ["médecin"].
    xml_signer_roles: tuple[str, ...] = ()
    #: Sign a document that is already signed (parallel signatures, each excluding
    #: the others with an XPath filter); refused (422 already_signed) otherwise.
    xml_allow_parallel: bool = False
    #: XPath of the element the signature is appended to (default: the root), with
    #: its prefixes as "prefix=namespace-uri" strings.
    xml_signature_parent: str | None = None
    xml_namespaces: tuple[str, ...] = ()
    #: ``POST /v1/batches``: at most this many documents per batch (one authorisation)...
    batch_max_documents: int = field(default=250, metadata={"check": _positive})
    #: ...signed within this many minutes of the PIN entry (24 h: a working day's notes).
    batch_max_minutes: float = field(default=1440.0, metadata={"check": _positive})
    #: Documents of a batch in flight at once: their TSA and revocation requests
    #: overlap; the key signs one at a time. Keep it within what the TSA allows.
    batch_concurrency: int = field(default=4, metadata={"check": _positive})


@dataclass(frozen=True)
class Settings:
    """The whole configuration."""

    server: ServerSettings = field(default_factory=ServerSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    log: LogSettings = field(default_factory=LogSettings)
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)
    ui: UiSettings = field(default_factory=UiSettings)
    cns: CnsSettings = field(default_factory=CnsSettings)
    trust: TrustSettings = field(default_factory=TrustSettings)
    #: ``[[keys]]``: the signing keys; in sandbox mode, none means the sandbox's.
    keys: tuple[KeyConfig, ...] = ()
    signing: SigningSettings = field(default_factory=SigningSettings)
    #: The file the settings came from, if any (not a TOML key).
    source: Path | None = field(default=None, metadata={"internal": True})


def is_loopback_host(host: str) -> bool:
    """Whether *host* (a name or an address) only reaches this machine."""
    if host.lower() in {"localhost", "localhost.localdomain"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_settings(file: Path | None, *, required: bool = False) -> Settings:
    """Read *file*; a missing file gives the defaults unless *required*."""
    if file is None:
        return Settings()
    if not file.exists():
        if required:
            raise ConfigError(file, None, "no such file")
        return Settings(source=file)
    try:
        with file.open("rb") as handle:
            document = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, None, f"not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(file, None, f"cannot be read: {exc.strerror}") from None
    settings = _build(Settings, document, "", _Context(file))
    return dataclasses.replace(settings, source=file)


@dataclass(frozen=True)
class _Context:
    file: Path

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.file, key, problem)


def _build(cls: type[Any], table: Mapping[str, Any], prefix: str, ctx: _Context) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in table:
        if key not in fields:
            hint = difflib.get_close_matches(key, list(fields), n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ctx.error(prefix + key, f"unknown setting{suggestion}")
    values: dict[str, Any] = {}
    for name, spec in fields.items():
        if name not in table:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise ctx.error(prefix + name, "required setting is missing")
            continue
        key = prefix + name
        try:
            value = _convert(hints[name], table[name], key, ctx, spec.metadata.get("parse"))
            check: Callable[[Any], None] | None = spec.metadata.get("check")
            if check is not None:
                check(value)
        except ValueError as exc:
            raise ctx.error(key, str(exc)) from None
        values[name] = value
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        raise ctx.error(prefix.rstrip(".") or "(top level)", str(exc)) from None
    except Exception as exc:
        # A section's own validation (e.g. KeyConfig's) raises its layer's error type;
        # what matters here is to report it against this table, not as a traceback.
        if hasattr(exc, "detail"):
            raise ctx.error(prefix.rstrip(".") or "(top level)", str(exc.detail)) from None
        raise


def is_database_url(value: object) -> bool:
    """A PostgreSQL connection URL (rather than a file path)."""
    return isinstance(value, str) and value.startswith(("postgresql://", "postgres://"))


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a table"
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    return names.get(tp, "a path" if tp is Path else getattr(tp, "__name__", str(tp)))


def _convert(
    tp: Any,
    value: Any,
    key: str,
    ctx: _Context,
    parse: Callable[[Any], Any] | None = None,
) -> Any:
    if parse is not None:
        return parse(value)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        # ``X | None``: TOML has no null, so the value is an X. ``Path | str``: a
        # database URL stays a string (``[cns] outbox``), anything else is a path.
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if set(inner) == {Path, str}:
            if is_database_url(value):
                return value
            inner = [Path]
        (only,) = inner
        return _convert(only, value, key, ctx)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ValueError(f"expected {_describe(tp)} (got {value!r})")
        return value
    if origin in (tuple, list):
        if not isinstance(value, list):
            raise ValueError(f"expected {_describe(tp)}")
        inner = typing.get_args(tp)[0]
        items = [_convert(inner, item, f"{key}[{index}]", ctx) for index, item in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError("expected a table")
        return _build(tp, value, key + ".", ctx)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false (got {value!r})")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer (got {value!r})")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number (got {value!r})")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string (got {value!r})")
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected a path (got {value!r})")
        path = Path(value).expanduser()
        # Relative paths are relative to the file that names them, not the cwd of a service.
        return path if path.is_absolute() else (ctx.file.parent / path)
    raise ValueError(f"unsupported setting type {tp!r}")
