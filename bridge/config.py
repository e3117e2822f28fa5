"""Bridge configuration: `AIFLEET_BRIDGE_*` variables (pydantic-settings), checked at start.

Secure by default: authentication is on unless `AIFLEET_BRIDGE_AUTH=off`, and auth off is only
accepted on a loopback address (dev mode). With auth on, exactly one key source is required
(a shared HS256 secret, a public key PEM for RS256/ES256, or a JWKS file), plus the issuer and
audience every token must carry.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigError(ValueError):
    """The bridge refuses to start with this configuration."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class BridgeSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AIFLEET_BRIDGE_", extra="ignore", frozen=True, env_ignore_empty=True
    )

    nats_url: str = Field(
        "nats://127.0.0.1:4222", validation_alias=AliasChoices("NATS_URL", "AIFLEET_NATS_URL")
    )
    host: str = Field("127.0.0.1", description="address uvicorn binds")
    port: int = Field(8080, ge=0, le=65535)

    auth: Literal["jwt", "off"] = Field("jwt", description="off: dev mode, loopback only")
    jwt_secret: SecretStr | None = Field(None, description="HS256 shared secret")
    jwt_secret_file: Path | None = Field(None, description="file holding the HS256 secret")
    jwt_public_key_file: Path | None = Field(None, description="RSA or EC P-256 public key PEM")
    jwks_file: Path | None = Field(None, description="JWKS (RSA / EC P-256 public keys)")
    jwt_issuer: str | None = Field(None, description="required `iss`")
    jwt_audience: str | None = Field(None, description="required `aud`")
    jwt_leeway_seconds: float = Field(30.0, ge=0, le=300, description="clock skew allowed")
    tenant_claim: str = Field("tenant", min_length=1, description="claim naming the tenant")
    user_claim: str = Field("sub", min_length=1, description="claim naming the user")
    dev_tenant: str = Field("default", description="dev mode: tenant when X-Tenant-ID is absent")

    request_timeout: float = Field(30.0, gt=0, le=600, description="deadline of one request")
    max_body_bytes: int = Field(1024 * 1024, ge=1024, description="larger bodies get 413")
    body_timeout: float = Field(10.0, gt=0, description="whole body must arrive within this")
    header_timeout: float = Field(10.0, gt=0, description="request headers must arrive within")
    rate_per_second: float = Field(100.0, ge=0, description="per-tenant refill rate; 0 = off")
    rate_burst: int = Field(200, ge=1, description="per-tenant bucket size")
    max_tenants_tracked: int = Field(100_000, ge=1, description="rate-limit buckets kept")
    rate_limit_delay: float = Field(
        0.5,
        ge=0,
        le=10,
        description="how long a request over its tenant's rate waits for its 429; 0 = at once",
    )

    components: list[str] | None = Field(
        None, description="components /readyz requires; default: every service with routes"
    )
    readiness_timeout: float = Field(0.5, gt=0, description="wait for a $SRV.PING answer")
    docs: bool = Field(True, description="serve /openapi.json and /docs")

    @model_validator(mode="after")
    def _check(self) -> BridgeSettings:
        if self.auth == "off":
            return self
        sources = [
            s
            for s in (
                self.jwt_secret,
                self.jwt_secret_file,
                self.jwt_public_key_file,
                self.jwks_file,
            )
            if s is not None
        ]
        if len(sources) != 1:
            raise ValueError(
                "auth=jwt needs exactly one of AIFLEET_BRIDGE_JWT_SECRET, "
                "AIFLEET_BRIDGE_JWT_SECRET_FILE, AIFLEET_BRIDGE_JWT_PUBLIC_KEY_FILE, "
                "AIFLEET_BRIDGE_JWKS_FILE"
            )
        if not self.jwt_issuer or not self.jwt_audience:
            raise ValueError(
                "auth=jwt needs AIFLEET_BRIDGE_JWT_ISSUER and AIFLEET_BRIDGE_JWT_AUDIENCE"
            )
        return self

    @property
    def dev_mode(self) -> bool:
        return self.auth == "off"

    def check_bind(self, host: str | None = None) -> None:
        """Refuse to serve without authentication anywhere but on loopback."""
        host = self.host if host is None else host
        if self.dev_mode and not is_loopback(host):
            raise ConfigError(
                f"refusing to bind {host} with AIFLEET_BRIDGE_AUTH=off: without authentication "
                "the bridge only listens on a loopback address (127.0.0.1, ::1)"
            )
