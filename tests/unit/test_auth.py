"""Token verification: what is refused, with which code, and what is accepted.

Keys are generated here with ``cryptography``; files live in pytest's tmp_path.
Times are real (PyJWT reads the clock itself), so every time-based token is
hours away from the boundary it tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import time
from collections.abc import Callable
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import hypothesis
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, RSAAlgorithm
from jwt.api_jws import PyJWS
from jwt.exceptions import DecodeError

from cowrite.auth import (
    MAX_TOKEN_LENGTH,
    AuthError,
    AuthSettings,
    Identity,
    TokenVerifier,
    _decode_segment,
    auth_settings_from_env,
    mint_token,
    parse_doc_grants,
)
from cowrite.errors import ConfigError, LocalError, RemoteError

SECRET = "s" * 32
OTHER_SECRET = "o" * 32
HOUR = 3600


# -- Helpers and fixtures ------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def claims(**extra: Any) -> dict[str, Any]:
    """A valid claim set, one hour to go; ``None`` values drop a claim."""
    now = int(time.time())
    base: dict[str, Any] = {"sub": "u1", "iat": now, "exp": now + HOUR}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def private_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def refused(verifier: TokenVerifier, token: object, because: str = "") -> str:
    """The code ``verifier`` refuses ``token`` with, for a reason mentioning ``because``."""
    with pytest.raises(AuthError) as info:
        verifier.verify(token)
    assert because in info.value.message
    return info.value.code


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, bytes | str], str]:
    def write(name: str, data: bytes | str) -> str:
        path = tmp_path / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(path)

    return write


@pytest.fixture
def hs() -> TokenVerifier:
    return TokenVerifier(AuthSettings(secret=SECRET))


@pytest.fixture
def rs_settings(
    rsa_key: rsa.RSAPrivateKey, write: Callable[[str, bytes | str], str]
) -> AuthSettings:
    return AuthSettings(algorithms=("RS256",), public_key_file=write("rs.pem", public_pem(rsa_key)))


def jwk(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, **fields: Any) -> dict[str, Any]:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        data = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        data = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    data.update(fields)
    return data


def jwks_settings(
    write: Callable[[str, bytes | str], str], *keys: dict[str, Any], **options: Any
) -> AuthSettings:
    path = write("jwks.json", json.dumps({"keys": list(keys)}))
    return AuthSettings(algorithms=options.pop("algorithms", ("ES256",)), jwks_file=path, **options)


# -- Refused: token_missing ------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", 42, b"a.b.c", ["a.b.c"], {"token": "a.b.c"}])
def test_absent_empty_or_non_string_token_is_missing(hs: TokenVerifier, token: object) -> None:
    assert refused(hs, token) == "token_missing"


# -- Refused: token_invalid ------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
@pytest.mark.parametrize("signature", ["", "c2ln"])
def test_unsigned_alg_none_token_is_invalid(hs: TokenVerifier, alg: str, signature: str) -> None:
    token = f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(claims())}.{signature}"
    assert refused(hs, token, because="algorithm") == "token_invalid"


def test_hs256_signed_with_the_rsa_public_key_is_invalid(
    rs_settings: AuthSettings, rsa_key: rsa.RSAPrivateKey
) -> None:
    # Algorithm confusion: an attacker who knows the public key PEM uses it as
    # an HMAC secret.  PyJWT refuses to sign that, so the token is built by hand.
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT'})}.{b64json(claims())}"
    mac = hmac.new(public_pem(rsa_key), signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64url(mac)}"
    assert refused(TokenVerifier(rs_settings), token, because="algorithm") == "token_invalid"


def test_rs256_token_against_an_hs256_config_is_invalid(
    hs: TokenVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    assert refused(hs, token, because="algorithm") == "token_invalid"


def test_algorithm_outside_the_configured_list_is_invalid() -> None:
    verifier = TokenVerifier(AuthSettings(algorithms=("HS512",), secret="k" * 64))
    token = jwt.encode(claims(), "k" * 64, algorithm="HS256")
    assert refused(verifier, token, because="algorithm") == "token_invalid"


def test_token_signed_with_another_secret_is_invalid(hs: TokenVerifier) -> None:
    token = jwt.encode(claims(), OTHER_SECRET, algorithm="HS256")
    with pytest.raises(AuthError) as info:
        hs.verify(token)
    assert info.value.code == "token_invalid"
    assert info.value.message == "token signature is invalid"


def test_tampered_signature_is_invalid(hs: TokenVerifier) -> None:
    header, payload, signature = jwt.encode(claims(), SECRET, algorithm="HS256").split(".")
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
    assert refused(hs, f"{header}.{payload}.{flipped}", because="signature") == "token_invalid"


def test_tampered_payload_is_invalid(hs: TokenVerifier) -> None:
    header, _, signature = jwt.encode(claims(), SECRET, algorithm="HS256").split(".")
    forged = b64json(claims(sub="admin"))
    assert refused(hs, f"{header}.{forged}.{signature}", because="signature") == "token_invalid"


def test_not_yet_valid_token_is_invalid(hs: TokenVerifier) -> None:
    token = jwt.encode(claims(nbf=int(time.time()) + HOUR), SECRET, algorithm="HS256")
    assert refused(hs, token, because="not valid yet") == "token_invalid"


@pytest.mark.parametrize("aud", ["other", ["other", "another"], None])
def test_wrong_or_missing_audience_is_invalid(aud: Any) -> None:
    verifier = TokenVerifier(AuthSettings(secret=SECRET, audience="cowrite"))
    token = jwt.encode(claims(aud=aud), SECRET, algorithm="HS256")
    assert refused(verifier, token, because="aud") == "token_invalid"


def test_audience_in_token_without_one_configured_is_invalid(hs: TokenVerifier) -> None:
    # RFC 7519 section 4.1.3: a recipient not named in a present "aud" must reject.
    token = jwt.encode(claims(aud="someone-else"), SECRET, algorithm="HS256")
    assert refused(hs, token, because="audience") == "token_invalid"


@pytest.mark.parametrize("iss", ["https://evil.example", None])
def test_wrong_or_missing_issuer_is_invalid(iss: str | None) -> None:
    verifier = TokenVerifier(AuthSettings(secret=SECRET, issuer="https://idp.example"))
    token = jwt.encode(claims(iss=iss), SECRET, algorithm="HS256")
    assert refused(verifier, token, because="iss") == "token_invalid"


@pytest.mark.parametrize("sub", [None, "", 42, ["u1"]])
def test_missing_or_bad_subject_is_invalid(hs: TokenVerifier, sub: Any) -> None:
    token = jwt.encode(claims(sub=sub), SECRET, algorithm="HS256")
    assert refused(hs, token, because="sub") == "token_invalid"


@pytest.mark.parametrize("exp", [None, "4102444800", "soon", True])
def test_missing_or_non_numeric_expiry_is_invalid(hs: TokenVerifier, exp: Any) -> None:
    payload = claims()
    if exp is None:
        del payload["exp"]
    else:
        payload["exp"] = exp
    token = f"{b64json({'alg': 'HS256', 'typ': 'JWT'})}.{b64json(payload)}"
    mac = hmac.new(SECRET.encode(), token.encode(), hashlib.sha256).digest()
    # exp=True is int(True) == 1 to PyJWT: long expired.
    expected = "token_expired" if exp is True else "token_invalid"
    assert refused(hs, f"{token}.{b64url(mac)}") == expected


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        " ",
        "a.b",
        "a.b.c",
        "...",
        "a.b.c.d",
        "eyJhbGciOiJIUzI1NiJ9.e30",
        "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln",  # payload is not JSON
        "WyJIUzI1NiJd.e30.c2ln",  # header is a JSON array
        "é.é.é",
        "\ud800.\udc00.x",
        "a" * (MAX_TOKEN_LENGTH + 1),
    ],
)
def test_garbage_is_invalid(hs: TokenVerifier, token: str) -> None:
    assert refused(hs, token) == "token_invalid"


@hypothesis.settings(max_examples=300, deadline=None)
@given(token=st.text() | st.from_regex(r"\A[A-Za-z0-9_=-]*\.[A-Za-z0-9_=.-]*\Z"))
def test_any_text_is_refused_with_an_auth_error(token: str) -> None:
    verifier = TokenVerifier(AuthSettings(secret=SECRET))
    with pytest.raises(AuthError) as info:
        verifier.verify(token)
    assert info.value.code in {"token_missing", "token_invalid"}


# -- Refused: token_expired ------------------------------------------------------


def test_expired_token_is_expired(hs: TokenVerifier) -> None:
    settings = AuthSettings(secret=SECRET)
    token = mint_token(settings, user_id="u1", ttl=HOUR, now=time.time() - 2 * HOUR)
    with pytest.raises(AuthError) as info:
        hs.verify(token)
    assert (info.value.code, info.value.message) == ("token_expired", "token has expired")


def test_expired_token_with_a_bad_signature_is_invalid_not_expired(hs: TokenVerifier) -> None:
    token = mint_token(AuthSettings(secret=OTHER_SECRET), user_id="u1", now=time.time() - 2 * HOUR)
    assert refused(hs, token, because="signature") == "token_invalid"


def test_leeway_tolerates_clock_skew() -> None:
    token = jwt.encode(claims(exp=int(time.time()) - 60), SECRET, algorithm="HS256")
    assert refused(TokenVerifier(AuthSettings(secret=SECRET)), token) == "token_expired"
    lenient = TokenVerifier(AuthSettings(secret=SECRET, leeway=HOUR))
    assert lenient.verify(token).user_id == "u1"


# -- Accepted ------------------------------------------------------------------


def test_hs256_token_is_accepted() -> None:
    settings = AuthSettings(secret=SECRET, audience="cowrite", issuer="https://idp.example")
    now = time.time()
    token = mint_token(settings, user_id="user-7", name="Ada", ttl=600, now=now)
    identity = TokenVerifier(settings).verify(token)
    assert identity == Identity(
        user_id="user-7", name="Ada", docs={}, expires_at=identity.expires_at
    )
    # Whole seconds: exp = floor(now) + 600 (the CLI's --ttl 1 gives exp - iat == 1).
    assert identity.expires_at == math.floor(now) + 600
    with pytest.raises(FrozenInstanceError):
        identity.user_id = "someone-else"  # type: ignore[misc]


def test_audience_list_containing_ours_is_accepted() -> None:
    verifier = TokenVerifier(AuthSettings(secret=SECRET, audience="cowrite"))
    token = jwt.encode(claims(aud=["billing", "cowrite"]), SECRET, algorithm="HS256")
    assert verifier.verify(token).user_id == "u1"


def test_rs256_token_via_pem_file_is_accepted(
    rs_settings: AuthSettings, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = mint_token(rs_settings, user_id="u-rs", private_key=private_pem(rsa_key))
    assert TokenVerifier(rs_settings).verify(token).user_id == "u-rs"


def test_rs256_token_signed_by_another_key_is_invalid(rs_settings: AuthSettings) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = mint_token(rs_settings, user_id="u-rs", private_key=private_pem(other))
    assert refused(TokenVerifier(rs_settings), token, because="signature") == "token_invalid"


def test_es256_token_via_jwks_is_selected_by_kid(
    ec_key: ec.EllipticCurvePrivateKey, write: Callable[[str, bytes | str], str]
) -> None:
    old = ec.generate_private_key(ec.SECP256R1())
    settings = jwks_settings(
        write,
        jwk(old, kid="old", alg="ES256", use="sig"),
        jwk(ec_key, kid="new"),  # no alg: ES256 by its curve
    )
    verifier = TokenVerifier(settings)
    assert verifier.key_ids == {"old", "new"}
    for key, kid in [(ec_key, "new"), (old, "old")]:
        token = mint_token(settings, user_id=f"u-{kid}", private_key=private_pem(key), kid=kid)
        assert verifier.verify(token).user_id == f"u-{kid}"
    # The right kid names the wrong key, an unknown kid, no kid at all:
    wrong = mint_token(settings, user_id="u", private_key=private_pem(old), kid="new")
    unknown = mint_token(settings, user_id="u", private_key=private_pem(ec_key), kid="gone")
    bare = jwt.encode(claims(), ec_key, algorithm="ES256")
    for token, because in [(wrong, "signature"), (unknown, "kid"), (bare, "kid")]:
        assert refused(verifier, token, because) == "token_invalid"


def test_jwks_hs256_header_with_an_ec_kid_is_invalid(
    ec_key: ec.EllipticCurvePrivateKey, write: Callable[[str, bytes | str], str]
) -> None:
    verifier = TokenVerifier(jwks_settings(write, jwk(ec_key, kid="k")))
    signing_input = f"{b64json({'alg': 'HS256', 'kid': 'k'})}.{b64json(claims())}"
    mac = hmac.new(b"anything", signing_input.encode(), hashlib.sha256).digest()
    assert refused(verifier, f"{signing_input}.{b64url(mac)}", "algorithm") == "token_invalid"


@pytest.mark.parametrize("kid", [7, ["k"], {"k": 1}, None])
def test_jwks_token_with_a_non_string_kid_is_invalid(
    ec_key: ec.EllipticCurvePrivateKey, write: Callable[[str, bytes | str], str], kid: Any
) -> None:
    verifier = TokenVerifier(jwks_settings(write, jwk(ec_key, kid="k")))
    signing_input = f"{b64json({'alg': 'ES256', 'kid': kid})}.{b64json(claims())}"
    assert refused(verifier, f"{signing_input}.c2ln") == "token_invalid"


@pytest.mark.parametrize("name", [None, "", 42, ["Ada"]])
def test_name_falls_back_to_subject(hs: TokenVerifier, name: Any) -> None:
    token = jwt.encode(claims(sub="u9", name=name), SECRET, algorithm="HS256")
    assert hs.verify(token).name == "u9"


def test_docs_claim_is_honoured_only_when_enabled() -> None:
    grants = {"doc-1": "owner", "doc-2": "editor", "doc-3": "viewer"}
    off = AuthSettings(secret=SECRET)
    on = AuthSettings(secret=SECRET, docs_claim=True)
    token = mint_token(off, user_id="u1", docs=grants)
    assert TokenVerifier(off).verify(token).docs == {}
    assert TokenVerifier(on).verify(token).docs == grants
    assert TokenVerifier(on).verify(mint_token(on, user_id="u1")).docs == {}


@pytest.mark.parametrize(
    "docs",
    [
        ["doc-1"],
        "doc-1=editor",
        42,
        {"doc-1": "admin"},
        {"doc-1": "Editor"},
        {"doc-1": 1},
        {"doc-1": "editor", "doc-2": None},
        {"": "viewer"},
    ],
)
def test_malformed_docs_claim(docs: Any) -> None:
    token = jwt.encode(claims(docs=docs), SECRET, algorithm="HS256")
    on = TokenVerifier(AuthSettings(secret=SECRET, docs_claim=True))
    with pytest.raises(AuthError) as info:
        on.verify(token)
    assert info.value.code == "token_invalid"
    assert "docs" in info.value.message
    # Ignored, malformed or not, when the claim is not enabled.
    assert TokenVerifier(AuthSettings(secret=SECRET)).verify(token).docs == {}


def test_identity_docs_is_a_copy() -> None:
    settings = AuthSettings(secret=SECRET, docs_claim=True)
    verifier = TokenVerifier(settings)
    token = mint_token(settings, user_id="u1", docs={"d": "viewer"})
    verifier.verify(token).docs["d"] = "owner"
    assert verifier.verify(token).docs == {"d": "viewer"}


def test_auth_error_is_a_remote_error() -> None:
    error = AuthError("token_expired", "token has expired")
    assert isinstance(error, RemoteError)
    assert (error.code, error.message, str(error)) == (
        "token_expired",
        "token has expired",
        "token has expired",
    )


# -- AuthSettings --------------------------------------------------------------


@pytest.mark.parametrize("algorithms", [("none",), ("NONE",), ("HS256", "none"), ("RS256", "None")])
def test_settings_refuse_alg_none(algorithms: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError, match="must be signed"):
        AuthSettings(algorithms=algorithms, secret=SECRET, public_key_file="k.pem")


@pytest.mark.parametrize("algorithms", [("HS256", "RS256"), ("ES256", "HS512"), ("PS256", "HS256")])
def test_settings_refuse_mixing_hmac_and_asymmetric(algorithms: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError, match="cannot be mixed"):
        AuthSettings(algorithms=algorithms, secret="k" * 64, public_key_file="k.pem")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"algorithms": ()}, "at least one"),
        ({"algorithms": "HS256", "secret": SECRET}, "not a string"),
        ({"algorithms": ("HS257",), "secret": SECRET}, "unknown"),
        ({}, "needs a secret"),
        ({"secret": ""}, "needs a secret"),
        ({"secret": "short"}, "at least 32 bytes"),
        ({"algorithms": ("HS256", "HS512"), "secret": SECRET}, "at least 64 bytes"),
        ({"secret": SECRET, "public_key_file": "k.pem"}, "not public_key_file"),
        ({"secret": SECRET, "jwks_file": "k.json"}, "not public_key_file"),
        ({"algorithms": ("RS256",)}, "exactly one"),
        ({"algorithms": ("RS256",), "public_key_file": "k", "jwks_file": "j"}, "exactly one"),
        ({"algorithms": ("ES256",), "secret": SECRET, "jwks_file": "j"}, "do not use secret"),
        ({"secret": SECRET, "leeway": -1}, "leeway"),
        ({"secret": SECRET, "leeway": float("nan")}, "leeway"),
        ({"secret": SECRET, "audience": ""}, "audience"),
        ({"secret": SECRET, "issuer": ""}, "issuer"),
    ],
)
def test_settings_refuse_combinations_that_cannot_work(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        AuthSettings(**options)


def test_settings_are_frozen_and_keep_the_secret_out_of_repr() -> None:
    settings = AuthSettings(secret=SECRET, algorithms=["HS256"])  # type: ignore[arg-type]
    assert settings.algorithms == ("HS256",)
    assert SECRET not in repr(settings)
    with pytest.raises(FrozenInstanceError):
        settings.secret = "x"  # type: ignore[misc]


# -- Keys, checked when the verifier is built ------------------------------------


def test_verifier_refuses_a_key_of_the_wrong_type_or_size(
    ec_key: ec.EllipticCurvePrivateKey, write: Callable[[str, bytes | str], str]
) -> None:
    ec_pem = write("ec.pem", public_pem(ec_key))
    with pytest.raises(ConfigError, match="needs an RSA key"):
        TokenVerifier(AuthSettings(algorithms=("RS256",), public_key_file=ec_pem))
    with pytest.raises(ConfigError, match="needs curve secp384r1"):
        TokenVerifier(AuthSettings(algorithms=("ES384",), public_key_file=ec_pem))
    with pytest.raises(ConfigError, match="needs an RSA key"):
        TokenVerifier(AuthSettings(algorithms=("ES256", "RS256"), public_key_file=ec_pem))
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    small_pem = write("small.pem", public_pem(small))
    with pytest.raises(ConfigError, match="1024 bits"):
        TokenVerifier(AuthSettings(algorithms=("RS256",), public_key_file=small_pem))


def test_verifier_refuses_unreadable_or_non_public_key_files(
    ec_key: ec.EllipticCurvePrivateKey, write: Callable[[str, bytes | str], str], tmp_path: Path
) -> None:
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="cannot read"):
        TokenVerifier(AuthSettings(algorithms=("ES256",), public_key_file=missing))
    for content in (private_pem(ec_key), "not a key"):
        path = write("bad.pem", content)
        with pytest.raises(ConfigError, match="does not hold a PEM public key"):
            TokenVerifier(AuthSettings(algorithms=("ES256",), public_key_file=path))


def test_verifier_refuses_jwks_files_that_cannot_work(
    ec_key: ec.EllipticCurvePrivateKey,
    rsa_key: rsa.RSAPrivateKey,
    write: Callable[[str, bytes | str], str],
) -> None:
    def refuses(content: str, message: str) -> None:
        path = write("jwks.json", content)
        with pytest.raises(ConfigError, match=message):
            TokenVerifier(AuthSettings(algorithms=("ES256",), jwks_file=path))

    k = jwk(ec_key, kid="k")
    refuses("{not json", "not JSON")
    refuses("[]", '"keys" list')
    refuses('{"keys": {}}', '"keys" list')
    refuses('{"keys": [1]}', "not an object")
    refuses(json.dumps({"keys": []}), "no signature key")
    refuses(json.dumps({"keys": [k, k]}), "appears twice")
    refuses(json.dumps({"keys": [jwk(ec_key)]}), "has no kid")
    # Only keys for other algorithms or for encryption: nothing left.
    refuses(json.dumps({"keys": [jwk(rsa_key, kid="r"), {**k, "use": "enc"}]}), "no signature")
    refuses(json.dumps({"keys": [{**k, "x": "AAAA"}]}), "cannot be loaded")
    private = {**k, "d": ECAlgorithm.to_jwk(ec_key, as_dict=True)["d"]}
    refuses(json.dumps({"keys": [private]}), "private key material")
    p384 = jwk(ec.generate_private_key(ec.SECP384R1()), kid="p", alg="ES256")
    refuses(json.dumps({"keys": [p384]}), "needs curve secp256r1")


def test_jwks_skips_keys_for_other_algorithms(
    ec_key: ec.EllipticCurvePrivateKey,
    rsa_key: rsa.RSAPrivateKey,
    write: Callable[[str, bytes | str], str],
) -> None:
    keys = [
        jwk(rsa_key, kid="r"),
        {"kty": "oct", "k": b64url(b"x" * 32), "kid": "h"},
        jwk(ec_key, kid="e"),
    ]
    assert TokenVerifier(jwks_settings(write, *keys)).key_ids == {"e"}
    rs = jwks_settings(write, *keys, algorithms=("RS256",))
    verifier = TokenVerifier(rs)
    assert verifier.key_ids == {"r"}
    token = mint_token(rs, user_id="u-r", private_key=private_pem(rsa_key), kid="r")
    assert verifier.verify(token).user_id == "u-r"


# -- mint_token and the CLI helpers ------------------------------------------------


def test_mint_token_claims() -> None:
    settings = AuthSettings(secret=SECRET, audience="cowrite", issuer="https://idp.example")
    token = mint_token(settings, user_id="u1", name="Ada", ttl=60, docs={"d": "owner"}, now=1_000.5)
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload == {
        "sub": "u1",
        "name": "Ada",
        "iat": 1000,
        "exp": 1060,  # iat + ttl: the lifetime is exactly ttl seconds from iat
        "docs": {"d": "owner"},
        "iss": "https://idp.example",
        "aud": "cowrite",
    }
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_mint_token_refuses_bad_arguments(
    rs_settings: AuthSettings,
    ec_key: ec.EllipticCurvePrivateKey,
    write: Callable[[str, bytes | str], str],
) -> None:
    hs = AuthSettings(secret=SECRET)
    bad: list[tuple[AuthSettings, dict[str, Any], str]] = [
        (hs, {"user_id": ""}, "user_id"),
        (hs, {"user_id": "u", "ttl": 0}, "ttl"),
        (hs, {"user_id": "u", "ttl": float("inf")}, "ttl"),
        (hs, {"user_id": "u", "docs": {"d": "admin"}}, "docs"),
        (hs, {"user_id": "u", "private_key": private_pem(ec_key)}, "configured secret"),
        (rs_settings, {"user_id": "u"}, "needs private_key"),
        (rs_settings, {"user_id": "u", "private_key": "nope"}, "not an unencrypted PEM"),
        (rs_settings, {"user_id": "u", "private_key": private_pem(ec_key)}, "needs an RSA"),
        (jwks_settings(write, jwk(ec_key, kid="k")), {"user_id": "u"}, "pass kid"),
    ]
    for settings, arguments, message in bad:
        with pytest.raises(LocalError, match=message):
            mint_token(settings, **arguments)


def test_parse_doc_grants() -> None:
    assert parse_doc_grants([]) == {}
    assert parse_doc_grants(["a=owner", "b=c=viewer", "a=editor"]) == {
        "a": "editor",
        "b=c": "viewer",
    }
    for item in ("a", "=editor", "a=admin", "a="):
        with pytest.raises(LocalError, match="DOC=ROLE"):
            parse_doc_grants([item])


def test_auth_settings_from_env(write: Callable[[str, bytes | str], str]) -> None:
    assert auth_settings_from_env({"COWRITE_PORT": "1"}) is None
    settings = auth_settings_from_env(
        {
            "COWRITE_AUTH_ALGORITHMS": "HS256, HS384",
            "COWRITE_AUTH_SECRET": "k" * 48,
            "COWRITE_AUTH_AUDIENCE": "cowrite",
            "COWRITE_AUTH_ISSUER": "",
            "COWRITE_AUTH_LEEWAY": "2.5",
            "COWRITE_AUTH_DOCS_CLAIM": "yes",
        }
    )
    assert settings == AuthSettings(
        algorithms=("HS256", "HS384"),
        secret="k" * 48,
        audience="cowrite",
        leeway=2.5,
        docs_claim=True,
    )
    with pytest.raises(ConfigError, match="COWRITE_AUTH_SECRETS"):
        auth_settings_from_env({"COWRITE_AUTH_SECRETS": SECRET})
    with pytest.raises(ConfigError, match="LEEWAY"):
        auth_settings_from_env({"COWRITE_AUTH_SECRET": SECRET, "COWRITE_AUTH_LEEWAY": "x"})
    with pytest.raises(ConfigError, match="needs a secret"):
        auth_settings_from_env({"COWRITE_AUTH_DOCS_CLAIM": "1"})


# -- The verified-token memory -----------------------------------------------------


def test_an_accepted_token_is_remembered_and_never_outlives_its_exp(
    hs: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = mint_token(AuthSettings(secret=SECRET), user_id="alice", ttl=1)
    first = hs.verify(token)
    calls = 0
    original = hs._decoder.decode

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(hs._decoder, "decode", counting)
    assert hs.verify(token) == first  # no second signature check
    assert calls == 0
    # Past exp, the remembered identity is dropped and the full check refuses it.
    while time.time() <= first.expires_at:
        time.sleep(0.05)
    with pytest.raises(AuthError) as refused:
        hs.verify(token)
    assert refused.value.code == "token_expired"
    assert calls == 1


def test_a_refused_token_is_not_remembered(hs: TokenVerifier) -> None:
    token = mint_token(AuthSettings(secret="another-secret-" + "y" * 32), user_id="alice")
    for _ in range(2):
        with pytest.raises(AuthError):
            hs.verify(token)


def test_the_hmac_secret_is_prepared_once_and_signatures_are_still_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prepared = 0
    original = HMACAlgorithm.prepare_key

    def counting(self: HMACAlgorithm, key: Any) -> Any:
        nonlocal prepared
        prepared += 1
        return original(self, key)

    tokens = {user: mint_token(AuthSettings(secret=SECRET), user_id=user) for user in "abc"}
    monkeypatch.setattr(HMACAlgorithm, "prepare_key", counting)
    verifier = TokenVerifier(AuthSettings(secret=SECRET))
    for user, token in tokens.items():
        assert verifier.verify(token).user_id == user
    assert prepared == 1
    forged = mint_token(AuthSettings(secret="another-secret-" + "z" * 32), user_id="mallory")
    with pytest.raises(AuthError) as refused:
        verifier.verify(forged)
    assert refused.value.code == "token_invalid"
    # An asymmetric key is still refused as an HMAC secret (PyJWT's own check).
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem_bytes = pem.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(jwt.InvalidKeyError):
        verifier._decoder._jws.get_algorithm_by_name("HS256").prepare_key(pem_bytes)


# -- The base64url segment decoder ------------------------------------------------

_SEGMENT_BYTES = st.sampled_from(
    list(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    + list(b"=+/!. \n\x00\xff")
)


def _outcome(decode: Any, segment: bytes) -> tuple[str, Any]:
    try:
        return ("ok", decode(segment, "payload"))
    except DecodeError as exc:
        return ("error", str(exc))


@hypothesis.settings(max_examples=3000, deadline=None)
@given(
    st.one_of(
        st.lists(_SEGMENT_BYTES, max_size=24).map(bytes),
        st.binary(max_size=40).map(lambda raw: base64.urlsafe_b64encode(raw)),
        st.binary(max_size=40).map(lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=")),
        st.tuples(st.binary(max_size=40), st.integers(0, 3)).map(
            lambda t: base64.urlsafe_b64encode(t[0]).rstrip(b"=") + b"=" * t[1]
        ),
    )
)
def test_the_segment_decoder_agrees_with_pyjwts_on_every_input(segment: bytes) -> None:
    # Same value or the same DecodeError message as PyJWT's own function.
    assert _outcome(_decode_segment, segment) == _outcome(PyJWS._decode_base64url_segment, segment)


def test_the_verifiers_decoder_uses_the_segment_decoder(hs: TokenVerifier) -> None:
    assert hs._decoder._jws._decode_base64url_segment is _decode_segment
    token = mint_token(AuthSettings(secret=SECRET), user_id="alice")
    header, payload, signature = token.split(".")
    for bad in (f"{header}.{payload}!.{signature}", f"{header}.{payload}.{signature}A"):
        with pytest.raises(AuthError) as refused:
            hs.verify(bad)
        assert refused.value.code == "token_invalid"
    assert hs.verify(f"{header}.{payload}.{signature}").user_id == "alice"
