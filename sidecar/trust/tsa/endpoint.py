"""One TSA as configured (``[[trust.tsa]]``): URL, timeout, attempts, policy, credentials."""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp

from ...config import TsaSettings
from ...logs import register_secret

log = logging.getLogger("sidecar.trust.tsa")


@dataclass(frozen=True)
class TsaEndpoint:
    """One TSA as the client uses it (built from :class:`~sidecar.config.TsaSettings`)."""

    url: str
    timeout: float = 10.0
    attempts: int = 2
    policy: str | None = None
    #: ``Authorization`` header value for HTTP basic auth (kept out of repr and logs).
    authorization: str | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)

    @classmethod
    def from_settings(
        cls, settings: TsaSettings, *, environ: Mapping[str, str] | None = None
    ) -> TsaEndpoint:
        """Resolve the password source and load the client certificate; ValueError if unusable."""
        if not settings.url:
            raise ValueError("trust.tsa: every TSA needs a url")
        environ = os.environ if environ is None else environ
        auth = None
        if settings.username:
            password = _read_password(settings, environ)
            register_secret(password)
            auth = aiohttp.encode_basic_auth(settings.username, password)
            if settings.url.startswith("http://"):
                log.warning(
                    "TSA %s uses basic auth over plain http: the password travels in clear",
                    settings.url,
                )
        elif settings.password_env or settings.password_file or settings.password_keyring:
            raise ValueError(f"TSA {settings.url}: a password is configured but no username")
        context = None
        if settings.client_cert is not None:
            context = ssl.create_default_context()
            try:
                context.load_cert_chain(settings.client_cert, settings.client_key)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(
                    f"TSA {settings.url}: cannot load the client certificate "
                    f"{settings.client_cert}: {exc}"
                ) from None
        elif settings.client_key is not None:
            raise ValueError(f"TSA {settings.url}: client_key given without client_cert")
        return cls(
            url=settings.url,
            timeout=settings.timeout,
            attempts=settings.attempts,
            policy=settings.policy,
            authorization=auth,
            ssl_context=context,
        )


def _read_password(settings: TsaSettings, environ: Mapping[str, str]) -> str:
    if settings.password_env:
        value = environ.get(settings.password_env)
        if value is None:
            raise ValueError(
                f"TSA {settings.url}: environment variable {settings.password_env} is not set"
            )
        return value
    if settings.password_file is not None:
        try:
            return settings.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ValueError(
                f"TSA {settings.url}: cannot read password_file: {exc.strerror}"
            ) from None
    if settings.password_keyring:
        from ...keys.credentials import SecretUnavailable, read_stored_secret

        try:
            return read_stored_secret(settings.password_keyring, "TSA password")
        except SecretUnavailable as exc:
            raise ValueError(f"TSA {settings.url}: {exc.detail}") from None
    raise ValueError(
        f"TSA {settings.url}: username given without password_env, password_file "
        "or password_keyring"
    )
