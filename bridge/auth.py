"""Who is calling: a verified bearer JWT (PyJWT), or in dev mode the `X-Tenant-ID` header.

The algorithm list is fixed by the configured key, never by the token: a shared secret accepts
HS256 only, an RSA public key RS256 only, an EC P-256 key ES256 only, and a JWKS key the one
algorithm its type allows. So `alg: none` and HS/RS key confusion fail before any signature is
checked. `exp`, `nbf`, `iss` and `aud` are required. The tenant and the user come from
configurable claims; an `X-Tenant-ID` header naming another tenant than the token is refused.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from bridge.config import BridgeSettings, ConfigError
from schemas.errors import PermissionDenied, Unauthenticated
from subjects import HEADER_USER_ID, check_tenant, is_valid_tenant

HEADER_TENANT = "X-Tenant-ID"
# Request headers arrive as a mapping of lower-case names (ASGI spells them so).
_TENANT_KEY = HEADER_TENANT.lower()
_USER_KEY = HEADER_USER_ID.lower()
REQUIRED_CLAIMS = ["exp", "nbf", "iss", "aud"]
MIN_SECRET_BYTES = 32
MIN_RSA_BITS = 2048
_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: str
    user: str | None


@dataclass(frozen=True)
class _Key:
    key: Any
    algorithm: str


class DevAuth:
    """Dev mode (auth off, loopback only): the tenant is whatever `X-Tenant-ID` says."""

    def __init__(self, settings: BridgeSettings) -> None:
        self.default_tenant = check_tenant(settings.dev_tenant)

    def authenticate(self, headers: Mapping[str, str]) -> Caller:
        tenant = check_tenant(headers.get(_TENANT_KEY) or self.default_tenant)
        return Caller(tenant=tenant, user=headers.get(_USER_KEY) or None)


class JwtAuth:
    def __init__(self, settings: BridgeSettings) -> None:
        assert settings.jwt_issuer is not None
        assert settings.jwt_audience is not None
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.leeway = settings.jwt_leeway_seconds
        self.tenant_claim = settings.tenant_claim
        self.user_claim = settings.user_claim
        self.keys, self.by_kid = _load_keys(settings)
        self._jwt = jwt.PyJWT(options={"require": REQUIRED_CLAIMS})
        self._cache: dict[str, tuple[Caller, float]] = {}

    def authenticate(self, headers: Mapping[str, str]) -> Caller:
        scheme, _, token = (headers.get("authorization") or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("a bearer token is required")
        cached = self._cache.get(token)
        if cached is not None and time.time() < cached[1]:
            caller = cached[0]
        else:
            caller, expires = self._verify(token)
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[token] = (caller, expires)
        named = headers.get(_TENANT_KEY)
        if named is not None and named != caller.tenant:
            raise PermissionDenied(
                "X-Tenant-ID names another tenant than the token", details={"header": HEADER_TENANT}
            )
        return caller

    def _verify(self, token: str) -> tuple[Caller, float]:
        key = self._key_for(token)
        try:
            claims = self._jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("the token's audience is not accepted") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("the token's issuer is not accepted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"the token lacks the {exc.claim} claim") from None
        except jwt.InvalidAlgorithmError:
            raise Unauthenticated("the token's algorithm is not accepted") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("invalid token") from None
        tenant = claims.get(self.tenant_claim)
        if not isinstance(tenant, str) or not is_valid_tenant(tenant):
            raise PermissionDenied(
                "the token names no valid tenant", details={"claim": self.tenant_claim}
            )
        user = claims.get(self.user_claim)
        # A cached verdict never outlives the token, and is re-checked at least once a minute.
        expires = min(float(claims["exp"]), time.time() + 60)
        return Caller(tenant=tenant, user=str(user) if user is not None else None), expires

    def _key_for(self, token: str) -> _Key:
        if self.by_kid is None:
            return self.keys[0]
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError:
            raise Unauthenticated("invalid token") from None
        if kid is None and len(self.keys) == 1:
            return self.keys[0]
        key = self.by_kid.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise Unauthenticated("the token's key id is unknown")
        return key


def _load_keys(settings: BridgeSettings) -> tuple[list[_Key], dict[str, _Key] | None]:
    """The verification keys and their one algorithm each; a weak or odd key fails the start."""
    if settings.jwt_secret is not None or settings.jwt_secret_file is not None:
        if settings.jwt_secret is not None:
            secret = settings.jwt_secret.get_secret_value().encode()
        else:
            assert settings.jwt_secret_file is not None
            secret = settings.jwt_secret_file.read_bytes().strip()
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(f"the HS256 secret must be at least {MIN_SECRET_BYTES} bytes")
        return [_Key(secret, "HS256")], None
    if settings.jwt_public_key_file is not None:
        try:
            public = load_pem_public_key(settings.jwt_public_key_file.read_bytes())
        except ValueError as exc:
            raise ConfigError(f"{settings.jwt_public_key_file}: not a PEM public key") from exc
        return [_Key(public, _algorithm_of(public))], None
    assert settings.jwks_file is not None
    try:
        jwks = jwt.PyJWKSet.from_json(settings.jwks_file.read_text())
    except (jwt.PyJWKSetError, jwt.PyJWKError, ValueError) as exc:
        raise ConfigError(f"{settings.jwks_file}: not a usable JWKS ({exc})") from exc
    keys: list[_Key] = []
    by_kid: dict[str, _Key] = {}
    for jwk in jwks.keys:
        if jwk.public_key_use not in (None, "sig"):
            continue
        algorithm = _algorithm_of(jwk.key)
        if jwk.algorithm_name not in (algorithm, None):
            raise ConfigError(
                f"{settings.jwks_file}: key {jwk.key_id} declares {jwk.algorithm_name}"
            )
        key = _Key(jwk.key, algorithm)
        keys.append(key)
        if jwk.key_id:
            by_kid[jwk.key_id] = key
    if not keys:
        raise ConfigError(f"{settings.jwks_file}: no signing keys")
    return keys, by_kid


def _algorithm_of(key: Any) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ConfigError(f"RSA keys must have at least {MIN_RSA_BITS} bits")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise ConfigError("only RSA (RS256) and EC P-256 (ES256) public keys are accepted")


def authenticator(settings: BridgeSettings) -> DevAuth | JwtAuth:
    return DevAuth(settings) if settings.dev_mode else JwtAuth(settings)
