"""Authentication: only tokens the configured key signed, for the configured issuer and
audience, still valid, get through — and a refused request publishes nothing on NATS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import ValidationError

from aifleet.embedded import EmbeddedNats
from bridge.app import create_app
from bridge.config import ConfigError
from tests.bridge.conftest import (
    AUDIENCE,
    ISSUER,
    SECRET,
    Spy,
    bridge_settings,
    claims,
    hs256,
    jwt_settings,
    serving,
)
from workers.runtime.worker import Worker

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged_hs256(secret: bytes, **overrides: Any) -> str:
    """An HS256 token MACed with arbitrary bytes (PyJWT refuses to do this with a PEM key)."""
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims(**overrides)).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


def unsigned(**overrides: Any) -> str:
    head = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{head}.{b64(json.dumps(claims(**overrides)).encode())}."


def bearer(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


@pytest.fixture
async def hs_bridge(nats_server: EmbeddedNats, fleet: Worker) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(jwt_settings(nats_server.url)) as client:
        yield client


@pytest.fixture
async def rs_bridge(
    nats_server: EmbeddedNats, fleet: Worker, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    key_file = tmp_path / "rsa.pem"
    key_file.write_bytes(pem(RSA_KEY))
    settings = bridge_settings(
        nats_server.url,
        auth="jwt",
        jwt_public_key_file=key_file,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )
    async with serving(settings) as client:
        yield client


async def refused(
    client: httpx.AsyncClient, spy: Callable[[], Any], headers: dict[str, str], status: int
) -> dict[str, Any]:
    """The request is refused with `status` and nothing reached ai.v1.>."""
    response = await client.post("/api/v1/echo", json={"text": "x"}, headers=headers)
    assert response.status_code == status, response.text
    seen: Spy = await spy()
    assert seen.subjects == []
    body: dict[str, Any] = response.json()
    return body


async def test_a_valid_token_names_tenant_and_user(
    hs_bridge: httpx.AsyncClient, spy: Callable[[], Any]
) -> None:
    """The subject's tenant is the token's; X-User-ID is its `sub` (a sent header is ignored)."""
    response = await hs_bridge.post(
        "/api/v1/echo", json={"text": "x"}, headers=bearer(hs256(), **{"X-User-ID": "mallory"})
    )
    assert response.status_code == 200
    assert response.json()["tenant"] == "acme"
    seen: Spy = await spy()
    assert seen.subjects == ["ai.v1.acme.req.echo.echo"]
    assert (seen.messages[0].headers or {})["X-User-ID"] == "user-1"


async def test_missing_token_is_401_with_challenge(
    hs_bridge: httpx.AsyncClient, spy: Callable[[], Any]
) -> None:
    """No Authorization header: 401 UNAUTHENTICATED and a Bearer challenge."""
    response = await hs_bridge.get("/api/v1/cache/stats")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    await refused(hs_bridge, spy, {}, 401)


async def test_alg_none_is_401(hs_bridge: httpx.AsyncClient, spy: Callable[[], Any]) -> None:
    """An unsigned token (alg none) is refused."""
    body = await refused(hs_bridge, spy, bearer(unsigned()), 401)
    assert body["code"] == "UNAUTHENTICATED"


async def test_wrong_secret_is_401(hs_bridge: httpx.AsyncClient, spy: Callable[[], Any]) -> None:
    """A token signed with another secret is refused."""
    await refused(hs_bridge, spy, bearer(forged_hs256(b"x" * 40)), 401)


async def test_rs256_token_on_an_hs256_bridge_is_401(
    hs_bridge: httpx.AsyncClient, spy: Callable[[], Any]
) -> None:
    """The algorithm list is the key's: RS256 is not accepted where the key is a secret."""
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256")
    await refused(hs_bridge, spy, bearer(token), 401)


async def test_expired_token_is_401(hs_bridge: httpx.AsyncClient, spy: Callable[[], Any]) -> None:
    """A token past `exp` (beyond the leeway) is refused."""
    body = await refused(hs_bridge, spy, bearer(hs256(exp=1_000_000_000)), 401)
    assert "expired" in body["message"]


async def test_not_yet_valid_token_is_401(
    hs_bridge: httpx.AsyncClient, spy: Callable[[], Any]
) -> None:
    """A token whose `nbf` is in the future (beyond the leeway) is refused."""
    await refused(hs_bridge, spy, bearer(hs256(nbf=4_000_000_000)), 401)


@pytest.mark.parametrize("missing", ["exp", "nbf", "iss", "aud"])
async def test_token_without_a_required_claim_is_401(
    hs_bridge: httpx.AsyncClient, spy: Callable[[], Any], missing: str
) -> None:
    """exp, nbf, iss and aud are all required."""
    token = jwt.encode(claims(**{missing: None}), SECRET, algorithm="HS256")
    await refused(hs_bridge, spy, bearer(token), 401)


async def test_wrong_audience_is_401(hs_bridge: httpx.AsyncClient, spy: Callable[[], Any]) -> None:
    """A token for another audience is refused."""
    body = await refused(hs_bridge, spy, bearer(hs256(aud="other-api")), 401)
    assert "audience" in body["message"]


async def test_wrong_issuer_is_401(hs_bridge: httpx.AsyncClient, spy: Callable[[], Any]) -> None:
    """A token from another issuer is refused."""
    body = await refused(hs_bridge, spy, bearer(hs256(iss="https://evil.test")), 401)
    assert "issuer" in body["message"]


async def test_a_header_naming_another_tenant_is_403(
    hs_bridge: httpx.AsyncClient, spy: Callable[[], Any]
) -> None:
    """A tenant `a` token on a request naming tenant `b` is refused: the header never wins."""
    token = hs256(tenant="a")
    body = await refused(hs_bridge, spy, bearer(token, **{"X-Tenant-ID": "b"}), 403)
    assert body["code"] == "PERMISSION_DENIED"


async def test_a_token_without_a_valid_tenant_is_403(
    hs_bridge: httpx.AsyncClient, spy: Callable[[], Any]
) -> None:
    """No tenant claim, or one that is not a valid subject token, is refused."""
    await refused(hs_bridge, spy, bearer(hs256(tenant=None)), 403)
    await refused(hs_bridge, spy, bearer(hs256(tenant="a.>")), 403)


async def test_rs256_bridge_accepts_its_key(
    rs_bridge: httpx.AsyncClient, spy: Callable[[], Any]
) -> None:
    """A token signed by the configured RSA key gets through."""
    token = jwt.encode(claims(tenant="rs"), RSA_KEY, algorithm="RS256")
    response = await rs_bridge.post("/api/v1/echo", json={}, headers=bearer(token))
    assert (response.status_code, response.json()["tenant"]) == (200, "rs")


async def test_hs256_signed_with_the_public_key_is_401(
    rs_bridge: httpx.AsyncClient, spy: Callable[[], Any]
) -> None:
    """Key confusion: an HS256 token MACed with the RSA public key PEM is refused."""
    await refused(rs_bridge, spy, bearer(forged_hs256(pem(RSA_KEY))), 401)


async def test_rs256_signed_by_another_key_is_401(
    rs_bridge: httpx.AsyncClient, spy: Callable[[], Any]
) -> None:
    """A valid-looking RS256 token from another key pair is refused."""
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    await refused(rs_bridge, spy, bearer(jwt.encode(claims(), other, algorithm="RS256")), 401)


async def test_jwks_selects_the_key_by_kid(
    nats_server: EmbeddedNats, fleet: Worker, tmp_path: Path
) -> None:
    """With a JWKS, ES256 and RS256 keys verify their own tokens; an unknown kid is 401."""
    ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(EC_KEY.public_key()))
    rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**ec_jwk, "kid": "ec-1"}, {**rsa_jwk, "kid": "rsa-1"}]}))
    settings = bridge_settings(
        nats_server.url, auth="jwt", jwks_file=jwks, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
    )
    es = jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "ec-1"})
    rs = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    crossed = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "ec-1"})
    unknown = jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "nope"})
    async with serving(settings) as client:
        statuses = [
            (await client.post("/api/v1/echo", json={}, headers=bearer(t))).status_code
            for t in (es, rs, crossed, unknown)
        ]
    assert statuses == [200, 200, 401, 401]


async def test_custom_claims_name_tenant_and_user(
    nats_server: EmbeddedNats, fleet: Worker, spy: Callable[[], Any]
) -> None:
    """tenant_claim and user_claim choose which claims carry the tenant and the user."""
    settings = jwt_settings(nats_server.url, tenant_claim="org", user_claim="email")
    token = hs256(org="globex", email="ann@globex.test", tenant="ignored")
    async with serving(settings) as client:
        response = await client.post("/api/v1/echo", json={}, headers=bearer(token))
    assert response.json()["tenant"] == "globex"
    seen: Spy = await spy()
    assert (seen.messages[0].headers or {})["X-User-ID"] == "ann@globex.test"


def test_auth_off_on_a_public_address_refuses_to_start() -> None:
    """Dev mode binds loopback only: any other address is a configuration error."""
    for host in ("0.0.0.0", "10.1.2.3", "example.com"):
        with pytest.raises(ConfigError, match="refusing to bind"):
            create_app(bridge_settings("nats://127.0.0.1:4222", host=host))
    create_app(bridge_settings("nats://127.0.0.1:4222", host="::1"))


def test_auth_on_needs_exactly_one_key_and_issuer_and_audience(tmp_path: Path) -> None:
    """Missing key, two keys, or no issuer/audience: the settings are refused."""
    with pytest.raises(ValidationError, match="exactly one"):
        bridge_settings("nats://x", auth="jwt", jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    with pytest.raises(ValidationError, match="exactly one"):
        jwt_settings("nats://x", jwks_file=tmp_path / "k.json")
    with pytest.raises(ValidationError, match="ISSUER"):
        bridge_settings("nats://x", auth="jwt", jwt_secret=SECRET, jwt_audience=AUDIENCE)


def test_weak_keys_refuse_to_start(tmp_path: Path) -> None:
    """A short HS256 secret, a small RSA key or a non-P-256 EC key fail the start."""
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        create_app(jwt_settings("nats://x", jwt_secret="short"))
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (on purpose)
    p384 = ec.generate_private_key(ec.SECP384R1())
    for key in (small, p384):
        path = tmp_path / "key.pem"
        path.write_bytes(pem(key))
        settings = bridge_settings(
            "nats://x",
            auth="jwt",
            jwt_public_key_file=path,
            jwt_issuer=ISSUER,
            jwt_audience=AUDIENCE,
        )
        with pytest.raises(ConfigError):
            create_app(settings)
