"""The CNS transport adapter: our operations onto the CNS's web services, per configuration.

Everything that depends on the CNS's (confidential) wire contract is data in
``[cns]`` (:class:`~sidecar.config.CnsSettings`): the base URL of each environment,
the method and path of each operation, the idempotency header, the TLS client
certificate, and the bearer/OAuth2 step. The defaults describe the simulator's
contract (``sidecar/cns/simulator.py``).

Errors are sorted the way the callers need them:

- an answer, whatever its status: :class:`CnsAnswer` (the caller decides what a 4xx
  or a 5xx means for it);
- no answer in time: :class:`CnsTimeout`;
- no answer at all (refused, reset, dropped after the request): :class:`CnsUnreachable`.

:meth:`CnsTransport.lookup` asks what became of a message whose answer was lost
(the CNS's idempotency key makes the question well-defined): the first answer the
CNS gave under that key, or None when it processed nothing under it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import ssl
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote_plus

import aiohttp
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    pkcs12,
)
from lxml import etree

from ..config import CnsAuth, CnsOperation, CnsSettings, CnsTls
from ..errors import Misconfigured, UpstreamError, UpstreamSlow, UpstreamUnavailable
from ..logs import register_secret
from ..signing.xml_safety import XmlInputError, parse_xml
from ..upstream import connection_words, log_cause

if TYPE_CHECKING:
    from ..metrics import Metrics, UpstreamOutcome

__all__ = [
    "UNKNOWN_MESSAGE",
    "CnsAnswer",
    "CnsConfigError",
    "CnsTimeout",
    "CnsTransport",
    "CnsTransportError",
    "CnsUnreachable",
    "PidKind",
    "build_ssl_context",
    "parse_reasons",
]

log = logging.getLogger("sidecar.cns.transport")

PidKind = Literal["simulation", "validation", "contestation"]

#: The reason code of a status lookup's 404 when nothing was processed under the key.
UNKNOWN_MESSAGE = "UNKNOWN_MESSAGE"


class CnsConfigError(Misconfigured):
    """The ``[cns]`` configuration cannot be used (no URL, unreadable certificate...)."""


class CnsTransportError(UpstreamError):
    """No usable answer from the CNS."""


class CnsTimeout(CnsTransportError, UpstreamSlow):
    """The CNS did not answer in time (the request may have been processed)."""


class CnsUnreachable(CnsTransportError, UpstreamUnavailable):
    """Connection refused, reset or dropped (the request may have been processed)."""


@dataclass(frozen=True)
class CnsAnswer:
    """What the CNS answered."""

    status: int
    content_type: str
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def reasons(self) -> list[dict[str, str]]:
        return parse_reasons(self)


def parse_reasons(answer: CnsAnswer) -> list[dict[str, str]]:
    """The CNS's reasons for a refusal, as ``[{"code", "message"}]``.

    XML answers: every ``Reason`` or ``Anomaly`` element (any namespace), its ``code``
    attribute and its text. JSON answers: a ``reasons`` list, or a problem's
    ``detail``. Anything else: the start of the body as one message.
    """
    body = answer.body
    if not body:
        return [{"code": f"http_{answer.status}", "message": ""}]
    if "json" in answer.content_type:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, dict):
            if isinstance(data.get("reasons"), list):
                return [
                    {"code": str(r.get("code", "")), "message": str(r.get("message", ""))}
                    for r in data["reasons"]
                    if isinstance(r, dict)
                ]
            if "detail" in data:
                return [{"code": str(data.get("code", "")), "message": str(data["detail"])}]
    if "xml" in answer.content_type:
        try:
            root = parse_xml(body).root
        except XmlInputError:
            root = None
        if root is not None:
            found = root.xpath("//*[local-name()='Reason' or local-name()='Anomaly']")
            if found:
                return [
                    {"code": el.get("code", ""), "message": (el.text or "").strip()} for el in found
                ]
    text = body[:500].decode("utf-8", errors="replace").strip()
    return [{"code": f"http_{answer.status}", "message": text}]


def _child_text(root: etree._Element, name: str) -> str:
    found = root.xpath(f"//*[local-name()='{name}']")
    if not found:
        raise ValueError(f"no {name}")
    return "".join((found[0].text or "").split())


def _read_secret(env: str, file: Path | None, what: str, entry: str = "") -> str:
    if env:
        value = os.environ.get(env, "")
        if not value:
            raise CnsConfigError(f"{what}: environment variable {env} is empty or unset")
    elif file is not None:
        try:
            value = file.read_text().strip()
        except OSError as exc:
            raise CnsConfigError(f"{what}: cannot read {file.name}: {exc.strerror}") from None
    elif entry:
        from ..keys.credentials import SecretUnavailable, read_stored_secret

        try:
            value = read_stored_secret(entry, what)
        except SecretUnavailable as exc:
            raise CnsConfigError(f"{what}: {exc.detail}") from None
    else:
        raise CnsConfigError(f"{what}: set an environment variable, a file or a keyring entry")
    register_secret(value)
    return value


def build_ssl_context(tls: CnsTls) -> ssl.SSLContext | None:
    """TLS towards the CNS: its CA bundle and our client certificate; None = defaults.

    A PKCS#12 file is unpacked in memory and handed to OpenSSL through a private
    temporary file that exists only during the load (Python's ssl module loads
    certificates from files only). A client key on a PKCS#11 token is not supported
    by Python's ssl module; that needs an OpenSSL provider (left to the deployment).
    """
    if tls.client_cert is None and tls.pkcs12 is None and tls.ca_file is None:
        return None
    if tls.pkcs12 is not None and tls.client_cert is not None:
        raise CnsConfigError("cns.tls: set either pkcs12 or client_cert/client_key, not both")
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file) if tls.ca_file else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if tls.client_cert is not None:
            context.load_cert_chain(
                str(tls.client_cert), str(tls.client_key) if tls.client_key else None
            )
        elif tls.pkcs12 is not None:
            passphrase = (
                _read_secret(
                    tls.pkcs12_passphrase_env,
                    None,
                    "cns.tls PKCS#12 passphrase",
                    tls.pkcs12_passphrase_keyring,
                )
                if tls.pkcs12_passphrase_env or tls.pkcs12_passphrase_keyring
                else ""
            )
            key, cert, extra = pkcs12.load_key_and_certificates(
                tls.pkcs12.read_bytes(), passphrase.encode() or None
            )
            if key is None or cert is None:
                raise CnsConfigError("cns.tls.pkcs12 holds no key and certificate")
            pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
            pem += cert.public_bytes(Encoding.PEM)
            pem += b"".join(c.public_bytes(Encoding.PEM) for c in extra or ())
            with tempfile.TemporaryDirectory(prefix="sidecar-tls-") as directory:
                path = Path(directory) / "client.pem"
                path.touch(mode=0o600)
                path.write_bytes(pem)
                context.load_cert_chain(str(path))
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise CnsConfigError(f"cns.tls: cannot load the client certificate: {exc}") from None
    return context


class _TokenSource:
    """The ``Authorization`` header for the CNS: none, a configured bearer, or OAuth2."""

    def __init__(self, auth: CnsAuth, ssl_context: ssl.SSLContext | None) -> None:
        self._auth = auth
        self._ssl = ssl_context
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()
        if auth.mode == "bearer":
            self._token = _read_secret(
                auth.token_env, auth.token_file, "cns.auth token", auth.token_keyring
            )
            self._expires = float("inf")
        elif auth.mode == "oauth2":
            if not auth.token_url or not auth.client_id:
                raise CnsConfigError("cns.auth: oauth2 needs token_url and client_id")
            self._secret = _read_secret(
                auth.client_secret_env,
                auth.client_secret_file,
                "cns.auth client secret",
                auth.client_secret_keyring,
            )

    def invalidate(self) -> None:
        if self._auth.mode == "oauth2":
            self._token = None

    async def header(self, session: aiohttp.ClientSession, time_limit: float) -> dict[str, str]:
        if self._auth.mode == "none":
            return {}
        async with self._lock:
            if self._token is None or time.monotonic() >= self._expires:
                await self._fetch(session, time_limit)
        return {"Authorization": f"Bearer {self._token}"}

    async def _fetch(self, session: aiohttp.ClientSession, time_limit: float) -> None:
        # RFC 6749 4.4, client authenticated with HTTP Basic (section 2.3.1).
        form = {"grant_type": "client_credentials"}
        if self._auth.scope:
            form["scope"] = self._auth.scope
        try:
            async with session.post(
                self._auth.token_url,
                data=form,
                headers={"Authorization": _basic(self._auth.client_id, self._secret)},
                ssl=self._ssl if self._ssl is not None else True,
                timeout=aiohttp.ClientTimeout(total=time_limit),
            ) as response:
                data = await response.json(content_type=None)
                status = response.status
        except TimeoutError:
            raise CnsTimeout("the OAuth2 token endpoint did not answer in time") from None
        except (aiohttp.ClientError, ValueError) as exc:
            log_cause(log, "CNS OAuth2 token endpoint", "no usable answer", exc)
            raise CnsUnreachable(f"OAuth2 token endpoint: {connection_words(exc)}") from None
        if status != 200 or not isinstance(data, dict) or "access_token" not in data:
            error = data.get("error", "") if isinstance(data, dict) else ""
            raise CnsUnreachable(f"OAuth2 token endpoint answered {status} {error}".strip())
        self._token = str(data["access_token"])
        register_secret(self._token)
        lifetime = float(data.get("expires_in", 300))
        # Renew a little early so that a token does not expire on the way.
        self._expires = time.monotonic() + max(lifetime - 30, lifetime / 2)


def _basic(client_id: str, secret: str) -> str:
    # RFC 6749 2.3.1: both form-urlencoded before the Basic scheme's base64.
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def resolve_base_url(settings: CnsSettings, sandbox_url: str | None = None) -> str:
    """The base URL of the configured environment (sandbox: the simulator's by default)."""
    url = getattr(settings.base_urls, settings.environment)
    if not url and settings.environment == "sandbox" and sandbox_url:
        url = sandbox_url
    if not url:
        raise CnsConfigError(
            f"cns.base_urls.{settings.environment} is not set"
            + (
                " (run 'serve --sandbox' for the simulator)"
                if settings.environment == "sandbox"
                else ""
            )
        )
    return url.rstrip("/")


class CnsTransport:
    """Talks to the CNS over the daemon's shared HTTP session."""

    def __init__(
        self,
        settings: CnsSettings,
        base_url: str,
        session: aiohttp.ClientSession,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.base_url = base_url.rstrip("/")
        self._session = session
        #: Every exchange is counted and timed as upstream ``cns`` (``/metrics``).
        self.metrics = metrics
        self._ssl = build_ssl_context(settings.tls)
        self._tokens = _TokenSource(settings.auth, self._ssl)

    def url(self, op: CnsOperation, uuid: str = "") -> str:
        return self.base_url + op.path.replace("{uuid}", uuid)

    async def deposit(self, uuid: str, body: bytes) -> CnsAnswer:
        """Send a fee note; *uuid* is the idempotency key."""
        return await self._call(
            self.settings.wire.deposit,
            body=body,
            key=uuid,
            time_limit=self.settings.delivery_timeout,
        )

    async def cancel(self, fee_note_uuid: str, cancel_uuid: str) -> CnsAnswer:
        """Cancel a deposited fee note; *cancel_uuid* is this message's idempotency key."""
        return await self._call(
            self.settings.wire.cancel,
            path_uuid=fee_note_uuid,
            key=cancel_uuid,
            time_limit=self.settings.delivery_timeout,
        )

    async def pid(self, kind: PidKind, body: bytes, uuid: str = "") -> CnsAnswer:
        """A synchronous PID v2 request."""
        op = getattr(self.settings.wire, f"pid_{kind}")
        return await self._call(op, body=body, key=uuid, time_limit=self.settings.pid_timeout)

    async def lookup(self, uuid: str) -> CnsAnswer | None:
        """What the CNS answered under idempotency key *uuid*; None: it processed nothing.

        The simulator's contract (``GET /messages/{key}``, ``[cns.wire] lookup``): 200
        ``<MessageStatus>`` carrying the first answer's status and its body (base64), 404
        with reason :data:`UNKNOWN_MESSAGE` when the key is unknown. Raises
        :class:`CnsTransportError` when the question cannot be answered (no answer, a
        5xx, an answer that does not say).
        """
        answer = await self._call(
            self.settings.wire.lookup,
            path_uuid=uuid,
            time_limit=self.settings.delivery_timeout,
        )
        if answer.status == 404:
            # Only the CNS's own "no such key" means nothing was processed: a 404 of a
            # path it does not serve (a lookup it lacks) must not read as "safe to resend".
            if any(r["code"] == UNKNOWN_MESSAGE for r in answer.reasons()):
                return None
            raise CnsTransportError("the CNS does not answer status lookups (HTTP 404)")
        if answer.status != 200:
            raise CnsTransportError(f"status lookup answered {answer.status}")
        try:
            root = parse_xml(answer.body).root
            status = int(_child_text(root, "AnswerStatus"))
            body = base64.b64decode(_child_text(root, "Answer"), validate=True)
        except ValueError as exc:  # XmlInputError included
            log_cause(log, "CNS status lookup", "unusable answer", exc)
            raise CnsTransportError("the CNS's status lookup answer is unusable") from None
        return CnsAnswer(status, self.settings.wire.content_type, body)

    async def probe(self) -> CnsAnswer:
        return await self._call(self.settings.wire.health, time_limit=self.settings.connect_timeout)

    async def _call(
        self,
        op: CnsOperation,
        *,
        body: bytes | None = None,
        path_uuid: str = "",
        key: str = "",
        time_limit: float,
    ) -> CnsAnswer:
        for attempt in (1, 2):
            headers: dict[str, str] = await self._tokens.header(self._session, time_limit)
            if key:
                headers[self.settings.wire.idempotency_header] = key
            if body is not None:
                headers["Content-Type"] = self.settings.wire.content_type
            answer = await self._send(op, path_uuid or key, body, headers, time_limit)
            # An OAuth2 token the platform no longer accepts: fetch a new one, once.
            if answer.status == 401 and attempt == 1 and self.settings.auth.mode == "oauth2":
                self._tokens.invalidate()
                continue
            return answer
        raise AssertionError("unreachable")

    async def _send(
        self,
        op: CnsOperation,
        path_uuid: str,
        body: bytes | None,
        headers: Mapping[str, str],
        time_limit: float,
    ) -> CnsAnswer:
        url = self.url(op, path_uuid)
        client_timeout = aiohttp.ClientTimeout(
            total=time_limit, connect=min(self.settings.connect_timeout, time_limit)
        )
        started = time.perf_counter()
        outcome: UpstreamOutcome = "ok"
        message: str | None = None
        answer: CnsAnswer | None = None
        try:
            async with self._session.request(
                op.method,
                url,
                data=body,
                headers=headers,
                timeout=client_timeout,
                ssl=self._ssl if self._ssl is not None else True,
                allow_redirects=False,
            ) as response:
                data = await response.read()
                answer = CnsAnswer(response.status, response.content_type, data)
        except TimeoutError:
            outcome, message = "timeout", f"{op.method} {op.path}"
            raise CnsTimeout(f"{op.method} {op.path}: no answer within {time_limit:g} s") from None
        except aiohttp.ClientError as exc:
            # Refused, reset, dropped after the request, TLS failure: no answer.
            log_cause(log, f"CNS {op.method} {op.path}", "no answer", exc)
            words = connection_words(exc)
            outcome, message = "unavailable", f"{op.method} {op.path}: {words}"
            raise CnsUnreachable(f"{op.method} {op.path}: {words}") from None
        finally:
            # Nothing recorded for a call cancelled on the way (a stopping daemon).
            if self.metrics is not None and (answer is not None or outcome != "ok"):
                if answer is not None and (answer.status >= 500 or answer.status in (401, 403)):
                    # A refusal of the content (other 4xx) is the CNS working as it should.
                    outcome, message = "error", f"{op.method} {op.path}: HTTP {answer.status}"
                self.metrics.upstream_done("cns", outcome, time.perf_counter() - started, message)
        assert answer is not None  # every other way out raised
        return answer
