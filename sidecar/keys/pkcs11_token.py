"""Keys on a PKCS#11 token: LuxTrust smartcards and sticks, HSMs, SoftHSM.

One session per signer, used by one thread at a time (real tokens are not
re-entrant): the signer's lock serializes calls and its single worker thread
keeps waiting signatures off the shared executor.

Token trouble becomes :class:`~sidecar.keys.errors.KeyLocked`, never a crash:
the session is dropped and the next call looks for the token again (and, if
it is still not found, re-initializes the module once, which is what makes
SoftHSM — and some card middlewares — see a token that came back).

PINs: the PIN is read from its source for each login and never kept. A PIN
the token rejected is remembered as a salted hash only, so that the same
wrong PIN is not presented again on every request — each try burns one of
the card's few. When the token reports CKF_USER_PIN_FINAL_TRY, a PIN is not
presented at all (only the pinpad, where the physician decides, is used then).

Keys with CKA_ALWAYS_AUTHENTICATE (qualified signature keys on cards): every
signature is preceded by a context-specific login (``C_Login(CKU_CONTEXT_SPECIFIC)``
right after ``C_SignInit``), with the PIN of the operation's
:class:`~sidecar.keys.authorisation.Authorisation` or through the pinpad — never
with a PIN from the keyring or the configuration, and under the same two guards.
A key with ``pin_source = "request"`` also logs its session in with the
operation's PIN, and does not sign for an operation that brought another one.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, cast

import pkcs11
from asn1crypto import x509
from pkcs11 import MGF, Attribute, Mechanism, ObjectClass, TokenFlag

from .algorithms import digest as compute_digest
from .algorithms import digest_info, ecdsa_raw_to_der, hash_algorithm
from .authorisation import Authorisation, current_authorisation
from .certificates import load_certificates, order_chain
from .credentials import SecretUnavailable, read_secret
from .errors import KeyConfigError, KeyLocked
from .key_settings import KeyConfig
from .pkcs11_module import Pkcs11Module, load_module
from .signer import Signer

if TYPE_CHECKING:

    class SigningKey(pkcs11.PrivateKey, pkcs11.SignMixin):
        """A private key with CKA_SIGN: python-pkcs11 mixes the two at run time."""


__all__ = ["PIN_FLAG_NAMES", "Pkcs11Signer", "check_pin_flags"]

logger = logging.getLogger(__name__)

PIN_FLAG_NAMES: dict[TokenFlag, str] = {
    TokenFlag.USER_PIN_COUNT_LOW: "CKF_USER_PIN_COUNT_LOW",
    TokenFlag.USER_PIN_FINAL_TRY: "CKF_USER_PIN_FINAL_TRY",
    TokenFlag.USER_PIN_LOCKED: "CKF_USER_PIN_LOCKED",
    TokenFlag.USER_PIN_TO_BE_CHANGED: "CKF_USER_PIN_TO_BE_CHANGED",
}

_SIGN_MECHANISMS = {
    "sha256": (Mechanism.SHA256_RSA_PKCS, Mechanism.SHA256_RSA_PKCS_PSS, Mechanism.SHA256),
    "sha384": (Mechanism.SHA384_RSA_PKCS, Mechanism.SHA384_RSA_PKCS_PSS, Mechanism.SHA384),
    "sha512": (Mechanism.SHA512_RSA_PKCS, Mechanism.SHA512_RSA_PKCS_PSS, Mechanism.SHA512),
}
_MGF = {"sha256": MGF.SHA256, "sha384": MGF.SHA384, "sha512": MGF.SHA512}

# Logins refused otherwise than for a wrong PIN (that one is PinIncorrect, handled apart).
_PIN_REFUSALS = (
    pkcs11.exceptions.PinLocked,
    pkcs11.exceptions.PinLenRange,
    pkcs11.exceptions.PinInvalid,
    pkcs11.exceptions.PinExpired,
    pkcs11.exceptions.FunctionCancelled,
)
# ...of which these say nothing against the PIN itself: it may be given again.
_PIN_NOT_TRIED = (pkcs11.exceptions.PinLocked, pkcs11.exceptions.FunctionCancelled)

# Errors after which the session (or the whole token) is gone: drop it and look again.
_TOKEN_GONE = (
    pkcs11.exceptions.DeviceRemoved,
    pkcs11.exceptions.DeviceError,
    pkcs11.exceptions.TokenNotPresent,
    pkcs11.exceptions.TokenNotRecognised,
    pkcs11.exceptions.SessionHandleInvalid,
    pkcs11.exceptions.SessionClosed,
    pkcs11.exceptions.ObjectHandleInvalid,
    pkcs11.exceptions.KeyHandleInvalid,
    pkcs11.exceptions.UserNotLoggedIn,
    pkcs11.exceptions.SlotIDInvalid,
    pkcs11.exceptions.GeneralError,
)


def pin_flag_names(flags: TokenFlag) -> tuple[str, ...]:
    """The CKF_USER_PIN_* flags set in ``flags``, by their PKCS#11 names."""
    return tuple(name for flag, name in PIN_FLAG_NAMES.items() if flags & flag)


def check_pin_flags(flags: TokenFlag, *, key_id: str, pinpad: bool) -> None:
    """Refuse a login the token's flags say is unsafe or pointless.

    A locked PIN cannot be tried. On the final try a PIN from the keyring or
    the config is not presented: if it is the wrong one, the card is lost.
    Through a pinpad the physician types the PIN and decides for themself.
    """
    names = pin_flag_names(flags)
    if flags & TokenFlag.USER_PIN_LOCKED:
        raise KeyLocked(
            "pin_locked",
            f"key {key_id!r}: the token's user PIN is locked; unblock it with the PUK "
            "using the card issuer's tool",
            key_id=key_id,
            retries_left=0,
            token_flags=names,
        )
    if flags & TokenFlag.USER_PIN_FINAL_TRY and not pinpad:
        raise KeyLocked(
            "pin_final_try",
            f"key {key_id!r}: the token has one PIN try left; sidecar will not present the "
            "stored PIN (a wrong one would lock the card). Log in once with the card "
            "issuer's tool to reset the counter, then retry",
            key_id=key_id,
            retries_left=1,
            token_flags=names,
        )


class Pkcs11Signer(Signer):
    """A private key and its certificate on a PKCS#11 token."""

    backend = "pkcs11"

    def __init__(self, config: KeyConfig) -> None:
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"pkcs11-{config.id}")
        super().__init__(config, executor=self._worker)
        self._lock = threading.RLock()
        self._module: Pkcs11Module | None = None
        self._session: pkcs11.Session | None = None
        self._key: SigningKey | None = None
        self._generation = -1
        self._mechanisms: frozenset[Mechanism] = frozenset()
        self._pin_salt = os.urandom(16)
        self._rejected_pin: bytes | None = None
        #: Fingerprint of the operation PIN the session was logged in with (pin_source
        #: "request"): another operation's PIN is checked by the token, not assumed.
        self._accepted_pin: bytes | None = None
        self._always_authenticate = False
        #: Context-specific logins attempted (one per signature of such a key).
        self.context_logins = 0

    # -- state --------------------------------------------------------------

    @property
    def module(self) -> Pkcs11Module:
        """The loaded module; loading it raises :class:`KeyConfigError` on trouble."""
        if self._module is None:
            assert self.config.module is not None  # KeyConfig.validate guarantees it
            self._module = load_module(self.config.module)
        return self._module

    @property
    def always_authenticate(self) -> bool:
        """True when the key carries CKA_ALWAYS_AUTHENTICATE (known once opened)."""
        return self._always_authenticate

    @property
    def pin_per_operation(self) -> bool:
        return self.config.pin_source == "request" or self._always_authenticate

    def _is_unlocked(self, *, slow: bool = False) -> bool:
        """*slow*: allowed to derive the operation PIN's fingerprint (PBKDF2, ~10 ms):
        only off the event loop. Without it an unknown fingerprint reads as "not yet"."""
        if not (
            self._session is not None
            and self._module is not None
            and self._generation == self._module.generation
        ):
            return False
        if self.config.pin_source != "request":
            return True
        # Ready only for an operation that brought a PIN: the one the session was
        # opened with, or any (checked by the token) when each signature logs in.
        authorisation = current_authorisation()
        if authorisation is None or not authorisation.active:
            return False
        if self._always_authenticate:
            return True
        fingerprint = authorisation.fingerprint(self._pin_salt, compute=slow)
        return fingerprint is not None and hmac.compare_digest(
            fingerprint, self._accepted_pin or b"\0"
        )

    # -- opening --------------------------------------------------------------

    def _unlock(self) -> None:
        module = self.module
        with self._lock:
            if self._is_unlocked(slow=True):
                return
            self._drop_session()
            seen = module.generation
            try:
                with module.using():
                    self._connect(module)
                return
            except KeyLocked as exc:
                if exc.reason != "token_absent":
                    raise
                first_failure = exc
            if not module.reinitialize(seen):
                raise first_failure
            with module.using():
                self._connect(module)

    def _find_token(self, module: Pkcs11Module) -> pkcs11.Token:
        criteria: dict[str, object] = {}
        if self.config.token_label is not None:
            criteria["token_label"] = self.config.token_label
        if self.config.token_serial is not None:
            criteria["token_serial"] = self.config.token_serial.encode("ascii")
        wanted = ", ".join(f"{k.removeprefix('token_')} {v!r}" for k, v in criteria.items())
        try:
            return module.lib.get_token(**criteria)
        except pkcs11.exceptions.MultipleTokensReturned:
            raise KeyConfigError(
                f"key {self.id!r}: several tokens match ({wanted or 'no criteria'}); "
                "set token_label or token_serial",
                key_id=self.id,
            ) from None
        except pkcs11.exceptions.NoSuchToken:
            raise KeyLocked(
                "token_absent",
                f"key {self.id!r}: no token {wanted or 'at all'} in {module.path.name}: "
                "insert the card or stick",
                key_id=self.id,
            ) from None
        except pkcs11.PKCS11Error as exc:
            raise KeyLocked(
                "token_absent",
                f"key {self.id!r}: the token cannot be reached ({type(exc).__name__})",
                key_id=self.id,
            ) from None

    def _token_flags(self, token: pkcs11.Token) -> TokenFlag:
        """The token's current flags (a fresh C_GetTokenInfo).

        Kept as a method because no software token sets CKF_USER_PIN_FINAL_TRY:
        tests override it to exercise that decision on a real token.
        """
        return token.slot.get_token().flags

    def _connect(self, module: Pkcs11Module) -> None:
        token = self._find_token(module)
        try:
            self._read_certificates(token)
            flags = self._token_flags(token)
            pinpad = self.config.pin_source == "pinpad"
            check_pin_flags(flags, key_id=self.id, pinpad=pinpad)
            session = self._login(token, flags, pinpad)
        except _TOKEN_GONE as exc:
            raise self._gone(exc) from None
        except pkcs11.PKCS11Error as exc:
            raise KeyLocked(
                "token_error",
                f"key {self.id!r}: the token refused to open a session ({type(exc).__name__})",
                key_id=self.id,
            ) from None
        try:
            self._key = self._find_key(session)
            self._mechanisms = frozenset(token.slot.get_mechanisms())
        except BaseException:
            self._close_session(session)
            raise
        self._session = session
        self._generation = module.generation
        logger.info("key %s: logged in to token %r", self.id, token.label)

    def _login(self, token: pkcs11.Token, flags: TokenFlag, pinpad: bool) -> pkcs11.Session:
        if pinpad:
            if not flags & TokenFlag.PROTECTED_AUTHENTICATION_PATH:
                raise KeyLocked(
                    "pinpad_unavailable",
                    f"key {self.id!r}: pin_source is 'pinpad' but token {token.label!r} "
                    "has no protected authentication path (no pinpad reader)",
                    key_id=self.id,
                )
            if flags & TokenFlag.USER_PIN_FINAL_TRY:
                logger.warning("key %s: one PIN try left; asking on the pinpad", self.id)
            credential: object = pkcs11.PROTECTED_AUTH
        else:
            authorisation: Authorisation | None = None
            if self.config.pin_source == "request":
                authorisation = self._operation_authorisation()
                fingerprint = authorisation.fingerprint(self._pin_salt) or b""
                self._refuse_known_wrong(fingerprint, flags)
                pin = authorisation.pin(self.id)
            else:
                try:
                    pin = read_secret(self.config, "PIN")
                except SecretUnavailable as exc:
                    raise KeyLocked(
                        "pin_missing", f"key {self.id!r}: {exc.detail}", key_id=self.id
                    ) from None
                assert pin is not None
                fingerprint = self._fingerprint(pin)
                self._refuse_known_wrong(fingerprint, flags)
            credential = pin
        try:
            session = token.open(user_pin=credential)
        except pkcs11.exceptions.UserAlreadyLoggedIn:
            # Another signer of this process is logged in to the same token, and
            # PKCS#11 login state is per application: a plain session is enough.
            # (With pin_source "request" this PIN is then unchecked for a key without
            # CKA_ALWAYS_AUTHENTICATE: one key per card is the case this serves.)
            return token.open()
        except pkcs11.exceptions.PinIncorrect:
            if not pinpad:
                self._rejected_pin = fingerprint
                if authorisation is not None:
                    authorisation.refused()
            raise self._pin_rejected(token) from None
        except _PIN_REFUSALS as exc:
            raise self._pin_refusal(exc, token, flags) from None
        self._rejected_pin = None
        self._accepted_pin = fingerprint if not pinpad else None
        return session

    def _operation_authorisation(self) -> Authorisation:
        """The operation's authorisation with a PIN, or :class:`KeyLocked` ``pin_missing``."""
        authorisation = current_authorisation()
        if authorisation is None or authorisation.protected_path:
            raise KeyLocked(
                "pin_missing",
                f"key {self.id!r} signs only with a PIN given for the operation, "
                "and none was given",
                key_id=self.id,
            )
        return authorisation

    def _refuse_known_wrong(self, fingerprint: bytes, flags: TokenFlag) -> None:
        if self._rejected_pin is not None and hmac.compare_digest(fingerprint, self._rejected_pin):
            raise KeyLocked(
                "pin_incorrect",
                f"key {self.id!r}: the token rejected this PIN before; it is not presented "
                "again. Give the right PIN, then retry",
                key_id=self.id,
                token_flags=pin_flag_names(flags),
            )

    def _pin_refusal(
        self, exc: pkcs11.PKCS11Error, token: pkcs11.Token, flags: TokenFlag
    ) -> KeyLocked:
        """A login the token refused otherwise than for a wrong PIN (both logins)."""
        if isinstance(exc, pkcs11.exceptions.PinLocked):
            return KeyLocked(
                "pin_locked",
                f"key {self.id!r}: the token's user PIN is locked; unblock it with the PUK",
                key_id=self.id,
                retries_left=0,
                token_flags=pin_flag_names(self._token_flags(token)),
            )
        if isinstance(exc, pkcs11.exceptions.PinExpired):
            return KeyLocked(
                "pin_locked",
                f"key {self.id!r}: the PIN has expired; change it with the card issuer's tool",
                key_id=self.id,
            )
        if isinstance(exc, pkcs11.exceptions.FunctionCancelled):
            return KeyLocked(
                "pin_missing", f"key {self.id!r}: PIN entry was cancelled", key_id=self.id
            )
        return KeyLocked(
            "pin_incorrect",
            f"key {self.id!r}: the token refused the PIN's length or characters",
            key_id=self.id,
            token_flags=pin_flag_names(flags),
        )

    def _pin_rejected(self, token: pkcs11.Token) -> KeyLocked:
        try:
            flags = self._token_flags(token)
        except pkcs11.PKCS11Error:
            flags = TokenFlag(0)
        retries: int | None = None
        if flags & TokenFlag.USER_PIN_LOCKED:
            retries = 0
            state = "the PIN is now locked"
        elif flags & TokenFlag.USER_PIN_FINAL_TRY:
            retries = 1
            state = "one try is left, which sidecar will not use"
        elif flags & TokenFlag.USER_PIN_COUNT_LOW:
            state = "the token counts failed tries"
        else:
            state = "the token does not say how many tries are left"
        return KeyLocked(
            "pin_incorrect",
            f"key {self.id!r}: the token rejected the PIN ({state}); it will not be presented "
            "again until it is changed in its source",
            key_id=self.id,
            retries_left=retries,
            token_flags=pin_flag_names(flags),
        )

    def _fingerprint(self, pin: str) -> bytes:
        return hashlib.pbkdf2_hmac("sha256", pin.encode("utf-8"), self._pin_salt, 10_000)

    def _read_certificates(self, token: pkcs11.Token) -> None:
        """Read the certificate and chain from a public session (no PIN needed)."""
        session = token.open()
        try:
            certificates = [
                (
                    obj[Attribute.LABEL],
                    obj[Attribute.ID],
                    x509.Certificate.load(obj[Attribute.VALUE]),
                )
                for obj in session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE})
            ]
        finally:
            self._close_session(session)
        wanted_id = self.config.cert_id or self.config.key_id
        wanted_label = self.config.cert_label or self.config.key_label
        leaf = None
        if wanted_id is not None:
            leaf = next((c for _, i, c in certificates if i == bytes.fromhex(wanted_id)), None)
        if leaf is None and wanted_label is not None:
            leaf = next((c for label, _, c in certificates if label == wanted_label), None)
        if leaf is None:
            raise KeyLocked(
                "key_not_found",
                f"key {self.id!r}: token {token.label!r} holds no certificate with "
                f"id {wanted_id!r} or label {wanted_label!r} (another card?)",
                key_id=self.id,
            )
        pool = [c for _, _, c in certificates]
        for extra in self.config.chain:
            pool.extend(load_certificates(extra))
        self._set_certificate(leaf, order_chain(leaf, pool))

    def _find_key(self, session: pkcs11.Session) -> SigningKey:
        attrs: dict[Attribute, object] = {Attribute.CLASS: ObjectClass.PRIVATE_KEY}
        if self.config.key_id is not None:
            attrs[Attribute.ID] = bytes.fromhex(self.config.key_id)
        if self.config.key_label is not None:
            attrs[Attribute.LABEL] = self.config.key_label
        found = list(session.get_objects(attrs))
        if not found:
            raise KeyLocked(
                "key_not_found",
                f"key {self.id!r}: no private key with label {self.config.key_label!r} / "
                f"id {self.config.key_id!r} on the token (another card?)",
                key_id=self.id,
            )
        if len(found) > 1:
            raise KeyConfigError(
                f"key {self.id!r}: several private keys match; set both key_label and key_id",
                key_id=self.id,
            )
        key = found[0]
        assert isinstance(key, pkcs11.PrivateKey)
        if not isinstance(key, pkcs11.SignMixin):
            # python-pkcs11 gives a key its sign() only when CKA_SIGN is true.
            raise KeyConfigError(
                f"key {self.id!r}: the token does not allow this key to sign (CKA_SIGN)",
                key_id=self.id,
            )
        try:
            self._always_authenticate = bool(key[Attribute.ALWAYS_AUTHENTICATE])
        except pkcs11.exceptions.AttributeTypeInvalid:
            # A PKCS#11 v2.01 module that predates the attribute: no such keys there.
            self._always_authenticate = False
        return cast("SigningKey", key)

    # -- signing -------------------------------------------------------------

    def _sign_unlocked(self, data: bytes, digest: str, pss: bool) -> bytes:
        module = self.module
        with self._lock:
            if not self._is_unlocked(slow=True):
                # Someone re-initialized the module or closed us since the check.
                self._unlock()
            try:
                return self._sign_in_session(module, data, digest, pss)
            except _TOKEN_GONE as exc:
                # The session died (card pulled and put back, another key on the same
                # token logged out, module re-initialized): reconnect once, right away.
                logger.info("key %s: session lost (%s), reconnecting", self.id, type(exc).__name__)
                self._drop_session()
            self._unlock()
            try:
                return self._sign_in_session(module, data, digest, pss)
            except _TOKEN_GONE as exc:
                self._drop_session()
                raise self._gone(exc) from None

    def _sign_in_session(self, module: Pkcs11Module, data: bytes, digest: str, pss: bool) -> bytes:
        key = self._key
        assert key is not None
        with module.using():
            return self._sign_with(key, data, digest, pss)

    def _sign_with(self, key: SigningKey, data: bytes, digest: str, pss: bool) -> bytes:
        if not self._always_authenticate:
            return self._sign_mechanism(key, data, digest, pss, {})
        authorisation, pin = self._context_pin()
        # python-pkcs11 logs in (CKU_CONTEXT_SPECIFIC) between C_SignInit and C_Sign
        # when given pin=; an empty one stands for the protected authentication path
        # (a zero-length PIN is how modules tell it from a typed one there).
        self.context_logins += 1
        try:
            signature = self._sign_mechanism(key, data, digest, pss, {"pin": pin or ""})
        except pkcs11.exceptions.PinIncorrect:
            if authorisation is not None:
                self._rejected_pin = authorisation.fingerprint(self._pin_salt)
                authorisation.refused()
            raise self._context_pin_rejected() from None
        except _PIN_REFUSALS as exc:
            if authorisation is not None and not isinstance(exc, _PIN_NOT_TRIED):
                authorisation.refused()
            session = self._session
            assert session is not None
            raise self._pin_refusal(exc, session.token, TokenFlag(0)) from None
        return signature

    def _context_pin(self) -> tuple[Authorisation | None, str | None]:
        """What the context-specific login of the next signature presents.

        The pinpad when the key is configured for it; otherwise the operation's PIN —
        never a stored one, never one the token refused, never on the final try.
        """
        session = self._session
        assert session is not None
        flags = self._token_flags(session.token)
        pinpad = self.config.pin_source == "pinpad"
        check_pin_flags(flags, key_id=self.id, pinpad=pinpad)
        if pinpad:
            if not flags & TokenFlag.PROTECTED_AUTHENTICATION_PATH:
                raise KeyLocked(
                    "pinpad_unavailable",
                    f"key {self.id!r}: pin_source is 'pinpad' but the token has no "
                    "protected authentication path",
                    key_id=self.id,
                )
            return None, None
        authorisation = self._operation_authorisation()
        self._refuse_known_wrong(authorisation.fingerprint(self._pin_salt) or b"", flags)
        return authorisation, authorisation.pin(self.id)

    def _context_pin_rejected(self) -> KeyLocked:
        session = self._session
        try:
            flags = self._token_flags(session.token) if session is not None else TokenFlag(0)
        except pkcs11.PKCS11Error:
            flags = TokenFlag(0)
        final = bool(flags & TokenFlag.USER_PIN_FINAL_TRY)
        return KeyLocked(
            "pin_incorrect",
            f"key {self.id!r}: the token refused the PIN given for this signature "
            "(CKA_ALWAYS_AUTHENTICATE); it is not presented again"
            + ("; one try is left, which sidecar will not use" if final else ""),
            key_id=self.id,
            retries_left=1 if final else None,
            token_flags=pin_flag_names(flags),
        )

    def _sign_mechanism(
        self,
        key: SigningKey,
        data: bytes,
        digest: str,
        pss: bool,
        login: dict[str, str],
    ) -> bytes:
        combined, combined_pss, hash_mechanism = _SIGN_MECHANISMS[digest]
        if self.key_type.startswith("ec"):
            # SoftHSM 2.6 and several cards lack CKM_ECDSA_SHA256: hash here, sign raw.
            raw = key.sign(compute_digest(digest, data), mechanism=Mechanism.ECDSA, **login)
            return ecdsa_raw_to_der(raw)
        if pss:
            params = (hash_mechanism, _MGF[digest], hash_algorithm(digest).digest_size)
            if combined_pss in self._mechanisms:
                return key.sign(data, mechanism=combined_pss, mechanism_param=params, **login)
            return key.sign(
                compute_digest(digest, data),
                mechanism=Mechanism.RSA_PKCS_PSS,
                mechanism_param=params,
                **login,
            )
        if combined in self._mechanisms:
            return key.sign(data, mechanism=combined, **login)
        # Cards that only offer raw CKM_RSA_PKCS sign a DigestInfo we build.
        return key.sign(
            digest_info(digest, compute_digest(digest, data)),
            mechanism=Mechanism.RSA_PKCS,
            **login,
        )

    def _gone(self, exc: Exception) -> KeyLocked:
        return KeyLocked(
            "token_absent",
            f"key {self.id!r}: the token was removed or stopped answering "
            f"({type(exc).__name__}); it will be looked for again on the next request",
            key_id=self.id,
        )

    # -- closing -------------------------------------------------------------

    def _drop_session(self) -> None:
        session, self._session, self._key = self._session, None, None
        module = self._module
        if session is not None and module is not None:
            with module.using():
                # A session of an older generation died with C_Finalize.
                if self._generation == module.generation:
                    self._close_session(session)

    @staticmethod
    def _close_session(session: pkcs11.Session) -> None:
        try:
            session.close()
        except pkcs11.PKCS11Error as exc:
            logger.debug("closing a PKCS#11 session failed: %s", type(exc).__name__)

    def close(self) -> None:
        with self._lock:
            self._drop_session()
        self._worker.shutdown(wait=False)
