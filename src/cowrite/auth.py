"""Who is connecting: JSON Web Token verification (RFC 7519, RFC 7515).

A client presents a signed token in the Socket.IO CONNECT ``auth`` payload; the
server turns it into an :class:`Identity` or refuses it with an
:class:`AuthError` whose ``code`` is one of ``token_missing``, ``token_invalid``
or ``token_expired``.

The defences, each following RFC 8725 (JWT Best Current Practices):

* The accepted algorithms come from configuration only, never from the token
  header (section 2.1 / 3.1).  ``none`` is refused even when configured.
* A configuration holds either HMAC algorithms or asymmetric ones, never both,
  so a public key can never be used as an HMAC secret (the "algorithm
  confusion" attack, section 2.1).
* Keys are loaded and checked once, when the :class:`TokenVerifier` is built:
  HMAC secrets at least as long as the hash output (RFC 7518 section 3.2), RSA
  keys of 2048 bits or more (RFC 7518 section 3.3), EC keys on the curve their
  algorithm names (RFC 7518 section 3.4).
* ``exp`` and ``sub`` are required; ``nbf``, ``iat``, ``aud`` and ``iss`` are
  checked (``aud`` and ``iss`` against the configured values).

Signature checks, claim checks and JSON parsing are PyJWT's, and so are the
rules for decoding a token's base64url segments (``_decode_segment`` applies
them faster, with the same outcome for every input); this module decides what
is accepted and turns every failure into an ``AuthError``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    load_pem_private_key,
    load_pem_public_key,
)
from jwt.algorithms import HMACAlgorithm
from jwt.api_jws import PyJWS
from jwt.exceptions import DecodeError, InvalidSubjectError
from jwt.types import Options

from cowrite.errors import ConfigError, LocalError, RemoteError

__all__ = [
    "ROLES",
    "AuthError",
    "AuthErrorCode",
    "AuthSettings",
    "Identity",
    "TokenVerifier",
    "auth_settings_from_env",
    "mint_token",
    "parse_doc_grants",
]

#: Roles a ``docs`` claim may grant on a document.
ROLES: Final = frozenset({"owner", "editor", "viewer"})

#: HMAC algorithms and the shortest secret each accepts, in bytes: "a key of
#: the same size as the hash output ... or larger MUST be used" (RFC 7518 3.2).
_HMAC: Final[Mapping[str, int]] = {"HS256": 32, "HS384": 48, "HS512": 64}
#: RSA algorithms (PKCS#1 v1.5 and PSS); keys must have 2048 bits or more.
_RSA: Final = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_RSA_MIN_BITS: Final = 2048
#: ECDSA algorithms and the curve each requires (RFC 7518 section 3.4).
_EC: Final[Mapping[str, type[ec.EllipticCurve]]] = {
    "ES256": ec.SECP256R1,
    "ES384": ec.SECP384R1,
    "ES512": ec.SECP521R1,
}
SUPPORTED_ALGORITHMS: Final = frozenset(_HMAC) | _RSA | frozenset(_EC)

#: Longer tokens are refused before any parsing: a bound on the work an
#: unauthenticated peer can cause.  Real tokens are a few hundred bytes.
MAX_TOKEN_LENGTH: Final = 8192
#: Accepted tokens remembered by a verifier (see TokenVerifier).
VERIFIED_CACHE: Final = 10_000

AuthErrorCode: TypeAlias = Literal["token_missing", "token_invalid", "token_expired"]


class AuthError(RemoteError):
    """The peer's token was refused.

    ``code`` is what a client may branch on: ``token_missing`` (no token, an
    empty one, or not a string), ``token_expired`` (a genuine token past its
    ``exp``: fetch a new one), ``token_invalid`` (anything else).  ``message``
    is a short English explanation safe to send back to the peer.
    """

    def __init__(self, code: AuthErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: AuthErrorCode = code
        self.message = message

    def __repr__(self) -> str:
        return f"AuthError({self.code!r}, {self.message!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthSettings:
    """How tokens are verified.  Checked when built; keys are read by ``TokenVerifier``.

    ``algorithms`` is the allow-list (never taken from tokens).  HMAC
    algorithms (``HS*``) need ``secret``; asymmetric ones (``RS*``, ``PS*``,
    ``ES*``) need exactly one of ``public_key_file`` (a PEM public key) or
    ``jwks_file`` (a JWK Set, RFC 7517 section 5, keys chosen by ``kid``).
    ``leeway`` is the clock skew, in seconds, tolerated on ``exp``/``nbf``/``iat``.
    ``docs_claim`` enables the ``docs`` claim: ``{"doc-id": "editor", ...}``.
    """

    algorithms: tuple[str, ...] = ("HS256",)
    secret: str | None = field(default=None, repr=False)
    public_key_file: str | None = None
    jwks_file: str | None = None
    audience: str | None = None
    issuer: str | None = None
    leeway: float = 0
    docs_claim: bool = False

    def __post_init__(self) -> None:
        given: object = self.algorithms  # checked at run time: it may come from a file
        if isinstance(given, str):
            raise ConfigError("algorithms must be a tuple of names, not a string")
        algorithms = tuple(self.algorithms)
        object.__setattr__(self, "algorithms", algorithms)
        if not algorithms:
            raise ConfigError("at least one token algorithm must be configured")
        for alg in algorithms:
            if not isinstance(alg, str) or alg.lower() == "none":
                # RFC 8725 section 3.1: never accept unsecured tokens.
                raise ConfigError(f"token algorithm {alg!r} is refused: tokens must be signed")
            if alg not in SUPPORTED_ALGORITHMS:
                supported = ", ".join(sorted(SUPPORTED_ALGORITHMS))
                raise ConfigError(f"unknown token algorithm {alg!r} (supported: {supported})")
        hmac = [alg for alg in algorithms if alg in _HMAC]
        if hmac and len(hmac) != len(algorithms):
            # Algorithm confusion (RFC 8725 section 2.1): with both kinds allowed,
            # a token claiming HS256 would be checked with the public key as secret.
            raise ConfigError("HMAC (HS*) and asymmetric algorithms cannot be mixed")
        if hmac:
            if self.public_key_file is not None or self.jwks_file is not None:
                raise ConfigError("HS* algorithms use secret, not public_key_file or jwks_file")
            if not self.secret:
                raise ConfigError(f"{hmac[0]} needs a secret")
            needed = max(_HMAC[alg] for alg in hmac)
            if len(self.secret.encode()) < needed:
                raise ConfigError(
                    f"the secret must be at least {needed} bytes long for {', '.join(hmac)}"
                )
        else:
            if self.secret is not None:
                raise ConfigError("asymmetric algorithms do not use secret")
            if (self.public_key_file is None) == (self.jwks_file is None):
                raise ConfigError(
                    "asymmetric algorithms need exactly one of public_key_file or jwks_file"
                )
        for name in ("audience", "issuer"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{name} must be a non-empty string when set")
        if not (math.isfinite(self.leeway) and self.leeway >= 0):
            raise ConfigError("leeway must be a non-negative number of seconds")

    @property
    def symmetric(self) -> bool:
        """True for an HMAC (shared secret) configuration."""
        return self.algorithms[0] in _HMAC


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """A verified token's holder.

    ``docs`` maps document ids to roles (``owner``, ``editor``, ``viewer``); it
    is empty unless ``AuthSettings.docs_claim`` is on and the token has one.
    ``expires_at`` is the token's ``exp``, seconds since the epoch.
    """

    user_id: str
    name: str
    docs: dict[str, str] = field(default_factory=dict)
    expires_at: float


_Key: TypeAlias = "bytes | rsa.RSAPublicKey | ec.EllipticCurvePublicKey"

#: Messages for PyJWT's failures, most specific first (isinstance order).
_REASONS: Final[tuple[tuple[type[jwt.PyJWTError], str], ...]] = (
    (jwt.InvalidSignatureError, "token signature is invalid"),
    (jwt.InvalidAlgorithmError, "token algorithm is not accepted"),
    (jwt.InvalidAudienceError, "token audience is not accepted"),
    (jwt.InvalidIssuerError, "token issuer is not accepted"),
    (jwt.ImmatureSignatureError, "token is not valid yet"),
    (InvalidSubjectError, "token subject is invalid"),
    (jwt.DecodeError, "token is malformed"),
)


def _invalid(message: str) -> AuthError:
    return AuthError("token_invalid", message)


class _MemoHMAC(HMACAlgorithm):
    """PyJWT's HMAC algorithm, remembering which keys passed ``prepare_key``.

    PyJWT prepares the key on every verification, and for HMAC that means
    trying to parse the secret as a PEM, SSH and DER key and as an X.509
    certificate (to refuse asymmetric keys used as HMAC secrets): about half
    of a whole HS256 verification.  The answer depends only on the key bytes,
    so it is computed once per secret, as is the key-length check (per
    length); the signature check itself is untouched."""

    def __init__(self, hash_alg: Any) -> None:
        super().__init__(hash_alg)
        self._prepared: dict[bytes, bytes] = {}
        self._short: dict[int, str | None] = {}

    def prepare_key(self, key: str | bytes) -> bytes:
        known = self._prepared.get(key) if isinstance(key, bytes) else None
        if known is None:
            known = super().prepare_key(key)
            if isinstance(key, bytes) and len(self._prepared) < 8:
                self._prepared[key] = known
        return known

    def check_key_length(self, key: bytes) -> str | None:
        # PyJWT builds a hash object per verification to learn the digest
        # size; the answer depends only on the key's length.
        size = len(key)
        if size not in self._short:
            self._short[size] = super().check_key_length(key)
        return self._short[size]


_BASE64URL: Final = re.compile(rb"[A-Za-z0-9_-]*")


def _decode_segment(segment: bytes, name: str) -> bytes:
    """PyJWT's ``PyJWS._decode_base64url_segment`` with the same outcome for
    every input (a hypothesis test compares them), its alphabet check done by
    one regular expression instead of a Python generator step per character:
    that step was 1.2-1.3 % of a join's samples under py-spy (~10 us of a
    ~30 us verification in a timeit loop).  Up to two trailing ``=`` are
    accepted when the segment's length is a multiple of 4; anything outside
    the base64url alphabet, an impossible length or non-canonical trailing
    bits is a ``DecodeError``."""
    stripped = segment.rstrip(b"=")
    padding = len(segment) - len(stripped)
    if (
        padding > 2
        or (padding and len(segment) % 4)
        or len(stripped) % 4 == 1
        or _BASE64URL.fullmatch(stripped) is None
    ):
        raise DecodeError(f"Invalid {name} padding")
    try:
        decoded = base64.urlsafe_b64decode(stripped + b"=" * (-len(stripped) % 4))
    except binascii.Error as err:
        raise DecodeError(f"Invalid {name} padding") from err
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != stripped:
        raise DecodeError(f"Invalid {name} padding")
    return decoded


def _pyjwt_with_memo_hmac() -> jwt.PyJWT:
    """A PyJWT decoder whose HS256/384/512 use :class:`_MemoHMAC` and whose
    segments are decoded by :func:`_decode_segment`.  PyJWT has no public way
    to give a ``PyJWT`` its ``PyJWS``; the attributes are checked here and by
    the tests, so an upgrade that renames them fails loudly."""
    decoder = jwt.PyJWT()
    jws = decoder._jws
    if not callable(getattr(PyJWS, "_decode_base64url_segment", None)):
        raise RuntimeError("PyJWT changed: PyJWS._decode_base64url_segment is gone")
    # Called as self._decode_base64url_segment(segment, name): a staticmethod.
    jws._decode_base64url_segment = _decode_segment  # type: ignore[method-assign]
    for name, hash_alg in (
        ("HS256", HMACAlgorithm.SHA256),
        ("HS384", HMACAlgorithm.SHA384),
        ("HS512", HMACAlgorithm.SHA512),
    ):
        jws.unregister_algorithm(name)
        jws.register_algorithm(name, _MemoHMAC(hash_alg))
    return decoder


class TokenVerifier:
    """Verifies tokens against one :class:`AuthSettings`.

    Keys are read and checked once, here; a key that cannot work raises
    ``ConfigError``.  ``verify`` does no I/O, so one verifier serves every
    connection.  It remembers the last ``VERIFIED_CACHE`` tokens it accepted
    (the exact strings, signature included) with their identity: a client
    reconnecting with the same token (every reconnection after an instance
    died) costs a dictionary lookup and an expiry check instead of a
    signature check and PyJWT's parsing (~55-75 us).  A token is never
    accepted past its ``exp`` (+ leeway), cached or not.
    """

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self._algorithms = list(settings.algorithms)
        self._options: Options = {
            "require": ["exp", "sub"],
            # Keys are checked at construction; this turns any miss into an
            # error for the token instead of a warning per verification.
            "enforce_minimum_key_length": True,
        }
        self._key: _Key | None = None
        self._jwks: dict[str, jwt.PyJWK] = {}
        self._decoder = _pyjwt_with_memo_hmac()
        self._verified: dict[str, Identity] = {}
        if settings.symmetric:
            assert settings.secret is not None  # checked by AuthSettings
            self._key = settings.secret.encode()
        elif settings.public_key_file is not None:
            self._key = _load_public_key(settings.public_key_file, settings.algorithms)
        else:
            assert settings.jwks_file is not None  # checked by AuthSettings
            self._jwks = _load_jwks(settings.jwks_file, settings.algorithms)

    @property
    def key_ids(self) -> frozenset[str]:
        """The ``kid`` values usable from the JWK Set (empty without one)."""
        return frozenset(self._jwks)

    def verify(self, token: object) -> Identity:
        """Return the holder of ``token`` or raise :class:`AuthError`."""
        # Cost, HS256: PyJWT's own jwt.decode 206 us per call on a loaded
        # 2-core VM, 93 us with the key preparation remembered (_MemoHMAC);
        # CPython 3.11.7, PyJWT 2.15.1, 181-byte token, timeit of 20k calls.
        # Much of the rest was PyJWT's per-character base64url check
        # (_decode_segment now): 31 -> 21 us on a faster machine.
        if not isinstance(token, str) or not token:
            raise AuthError("token_missing", "no token was given")
        known = self._verified.get(token)
        if known is not None:
            if known.expires_at + self.settings.leeway > time.time():
                # A fresh docs dict, as from a full check: callers may keep it.
                return replace(known, docs=dict(known.docs)) if known.docs else known
            del self._verified[token]  # expired: the full check below says so
        # A compact JWS is base64url and dots (RFC 7515 section 7.1); this also
        # keeps text PyJWT cannot encode (lone surrogates) away from it.
        if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise _invalid("token is malformed")
        try:
            key = self._key if self._key is not None else self._jwk_for(token)
            claims = self._decoder.decode(
                token,
                key,
                algorithms=self._algorithms,
                options=self._options,
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway,
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token_expired", "token has expired") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise _invalid(f"token lacks the {exc.claim!r} claim") from exc
        except jwt.PyJWTError as exc:
            reason = next((m for cls, m in _REASONS if isinstance(exc, cls)), "token is invalid")
            raise _invalid(reason) from exc
        identity = self._identity(claims)
        verified = self._verified
        if len(verified) >= VERIFIED_CACHE:
            del verified[next(iter(verified))]  # the oldest
        # The caller gets its own docs dict; the remembered identity keeps another.
        verified[token] = replace(identity, docs=dict(identity.docs)) if identity.docs else identity
        return identity

    def _jwk_for(self, token: str) -> jwt.PyJWK:
        # Only the kid is read before the signature is checked; the key found
        # carries its own algorithm, which PyJWT requires the header to match.
        kid = jwt.get_unverified_header(token).get("kid")
        if not isinstance(kid, str):
            raise _invalid("token has no key id (kid)")
        try:
            return self._jwks[kid]
        except KeyError:
            raise _invalid("token key id (kid) is unknown") from None

    def _identity(self, claims: dict[str, Any]) -> Identity:
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub:
            raise _invalid("token subject is invalid")
        # PyJWT accepts anything int() takes, strings included; a NumericDate
        # is a JSON number (RFC 7519 section 2).
        exp = claims["exp"]
        if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
            raise _invalid("token expiry (exp) is not a number")
        name = claims.get("name")
        docs: dict[str, str] = {}
        if self.settings.docs_claim and claims.get("docs") is not None:
            try:
                docs = _check_docs(claims["docs"])
            except ValueError as exc:
                raise _invalid(f"token docs claim is malformed: {exc}") from None
        return Identity(
            user_id=sub,
            name=name if isinstance(name, str) and name else sub,
            docs=docs,
            expires_at=float(exp),
        )


def _check_docs(raw: object) -> dict[str, str]:
    """The ``docs`` claim as a fresh dict, or ValueError saying what is wrong."""
    if not isinstance(raw, dict):
        raise ValueError("expected an object of document ids to roles")
    docs: dict[str, str] = {}
    for doc, role in raw.items():
        if not isinstance(doc, str) or not doc:
            raise ValueError("document ids must be non-empty strings")
        if not isinstance(role, str) or role not in ROLES:
            raise ValueError(f"role for {doc!r} must be owner, editor or viewer")
        docs[doc] = role
    return docs


# -- Keys ---------------------------------------------------------------------


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path!r}: {exc.strerror or exc}") from exc


def _check_key(key: object, alg: str, source: str) -> None:
    """ConfigError unless ``key`` (public or private) can verify ``alg`` tokens."""
    if alg in _RSA:
        if not isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
            raise ConfigError(f"{source}: {alg} needs an RSA key")
        if key.key_size < _RSA_MIN_BITS:
            raise ConfigError(
                f"{source}: RSA key has {key.key_size} bits, {_RSA_MIN_BITS} are required"
            )
    elif alg in _EC:
        if not isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{source}: {alg} needs an EC key")
        if not isinstance(key.curve, _EC[alg]):
            raise ConfigError(f"{source}: {alg} needs curve {_EC[alg].name}, not {key.curve.name}")
    else:  # pragma: no cover - AuthSettings lets only known algorithms through
        raise ConfigError(f"{source}: no key check for {alg}")


def _load_public_key(path: str, algorithms: Iterable[str]) -> _Key:
    source = f"public key file {path!r}"
    try:
        key = load_pem_public_key(_read(path, "public key file"))
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{source} does not hold a PEM public key") from exc
    for alg in algorithms:
        _check_key(key, alg, source)
    assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)  # by _check_key
    return key


def _jwk_algorithm(jwk: Mapping[str, Any]) -> str | None:
    """The algorithm a JWK is for: its ``alg``, else inferred as PyJWT does."""
    alg = jwk.get("alg")
    if alg is not None:
        return alg if isinstance(alg, str) else None
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "RSA":
        return "RS256"
    if kty == "EC":
        curves = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
        return curves.get(crv) if isinstance(crv, str) else None
    return None


def _load_jwks(path: str, algorithms: tuple[str, ...]) -> dict[str, jwt.PyJWK]:
    """The JWK Set's signature keys for ``algorithms``, by ``kid``.

    Keys for other algorithms or for encryption (``"use": "enc"``, RFC 7517
    section 4.2) are skipped; a key for an accepted algorithm must load,
    pass ``_check_key`` and have a unique ``kid``, or ``ConfigError``.  A JWK
    without ``alg`` counts as RS256 (RSA) or ES256/384/512 (by curve).
    """
    source = f"JWKS file {path!r}"
    try:
        document = json.loads(_read(path, "JWKS file"))
    except ValueError as exc:
        raise ConfigError(f"{source} is not JSON: {exc}") from exc
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f'{source} must hold an object with a "keys" list (RFC 7517 section 5)')
    keys: dict[str, jwt.PyJWK] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError(f"{source}: key #{index} is not an object")
        alg = _jwk_algorithm(entry)
        if alg not in algorithms or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            raise ConfigError(f"{source}: key #{index} ({alg}) has no kid")
        if kid in keys:
            raise ConfigError(f"{source}: kid {kid!r} appears twice")
        try:
            jwk = jwt.PyJWK(entry, algorithm=alg)
        except jwt.PyJWTError as exc:
            raise ConfigError(f"{source}: key {kid!r} cannot be loaded: {exc}") from exc
        if not isinstance(jwk.key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            # A verifier needs no secrets; a private JWK here is a leak
            # waiting to happen (and PyJWT cannot verify with an RSA private key).
            raise ConfigError(f"{source}: key {kid!r} holds private key material")
        _check_key(jwk.key, alg, f"{source}, key {kid!r}")
        keys[kid] = jwk
    if not keys:
        raise ConfigError(f"{source} has no signature key for {', '.join(algorithms)}")
    return keys


# -- Development helpers --------------------------------------------------------


def mint_token(
    settings: AuthSettings,
    *,
    user_id: str,
    name: str | None = None,
    ttl: float = 3600,
    docs: dict[str, str] | None = None,
    now: float | None = None,
    private_key: str | None = None,
    kid: str | None = None,
) -> str:
    """A token that ``TokenVerifier(settings)`` accepts, for development and tests.

    Signed with ``settings.algorithms[0]``: with the configured secret for
    HMAC, else with ``private_key`` (PEM text).  ``kid`` goes into the header
    (required for a JWKS configuration).  ``iss`` and ``aud`` are the
    configured ones; ``iat`` is ``now`` (default: the current time) and
    ``exp`` is ``now + ttl``.  Bad arguments raise ``LocalError``.
    """
    if not isinstance(user_id, str) or not user_id:
        raise LocalError("user_id must be a non-empty string")
    if not (math.isfinite(ttl) and ttl > 0):
        raise LocalError("ttl must be a positive number of seconds")
    # Whole seconds (NumericDate); exp - iat is ttl rounded up, never more.
    issued = math.floor(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": user_id,
        "iat": issued,
        "exp": issued + math.ceil(ttl),
    }
    if name is not None:
        claims["name"] = name
    if docs is not None:
        try:
            claims["docs"] = _check_docs(docs)
        except ValueError as exc:
            raise LocalError(f"docs: {exc}") from None
    if settings.issuer is not None:
        claims["iss"] = settings.issuer
    if settings.audience is not None:
        claims["aud"] = settings.audience
    if settings.jwks_file is not None and kid is None:
        raise LocalError("a JWKS configuration selects keys by kid: pass kid")
    headers = {"kid": kid} if kid is not None else None
    algorithm = settings.algorithms[0]

    if settings.symmetric:
        if private_key is not None:
            raise LocalError(f"{algorithm} signs with the configured secret, not a private key")
        assert settings.secret is not None  # checked by AuthSettings
        return jwt.encode(claims, settings.secret, algorithm=algorithm, headers=headers)
    if private_key is None:
        raise LocalError(f"{algorithm} needs private_key (PEM) to sign")
    try:
        key = load_pem_private_key(private_key.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise LocalError("private_key is not an unencrypted PEM private key") from exc
    _check_key(key, algorithm, "private_key")
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)  # by _check_key
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def parse_doc_grants(items: Iterable[str]) -> dict[str, str]:
    """``["doc-1=editor", ...]`` (the ``--doc DOC=ROLE`` option) as a ``docs`` claim.

    The last ``=`` separates, so document ids may contain ``=``.  A repeated
    document keeps its last role.  Bad items raise ``LocalError``.
    """
    docs: dict[str, str] = {}
    for item in items:
        doc, sep, role = item.rpartition("=")
        if not sep or not doc or role not in ROLES:
            raise LocalError(f"{item!r}: expected DOC=ROLE, ROLE one of owner, editor, viewer")
        docs[doc] = role
    return docs


def auth_settings_from_env(environ: Mapping[str, str] | None = None) -> AuthSettings | None:
    """``AuthSettings`` from ``COWRITE_AUTH_*`` variables, or None when none is set.

    ``COWRITE_AUTH_ALGORITHMS`` (comma-separated), ``_SECRET``,
    ``_PUBLIC_KEY_FILE``, ``_JWKS_FILE``, ``_AUDIENCE``, ``_ISSUER``,
    ``_LEEWAY`` (seconds), ``_DOCS_CLAIM`` (1/true/yes/on).
    """
    env = os.environ if environ is None else environ
    prefix = "COWRITE_AUTH_"
    raw = {k[len(prefix) :].lower(): v for k, v in env.items() if k.startswith(prefix)}
    if not raw:
        return None
    known = {"algorithms", "secret", "public_key_file", "jwks_file"}
    known |= {"audience", "issuer", "leeway", "docs_claim"}
    unknown = sorted(raw.keys() - known)
    if unknown:
        raise ConfigError(f"unknown variables: {', '.join(prefix + u.upper() for u in unknown)}")
    values: dict[str, Any] = {k: v for k, v in raw.items() if v != ""}
    if "algorithms" in values:
        values["algorithms"] = tuple(
            a.strip() for a in values["algorithms"].split(",") if a.strip()
        )
    if "leeway" in values:
        try:
            values["leeway"] = float(values["leeway"])
        except ValueError:
            raise ConfigError(f"{prefix}LEEWAY: expected a number of seconds") from None
    if "docs_claim" in values:
        values["docs_claim"] = values["docs_claim"].lower() in {"1", "true", "yes", "on"}
    return AuthSettings(**values)
