"""Settings of the HTTP API (the ``[api]`` table); off by default."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ApiSettings"]


class ApiSettings(BaseModel):
    """The ``[api]`` table.

    Tokens are never written in the config file: ``ops_tokens`` and
    ``auditor_tokens`` list *names* of secrets (files in the secrets directory,
    systemd ``LoadCredential=``). Several names per role allow rotation without
    downtime: add the new token, reload (SIGHUP), retire the old one.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Serve the HTTP API.")
    listen: str = Field("127.0.0.1", description="Address to bind (loopback by default).")
    port: int = Field(9847, ge=1, le=65535, description="TCP port.")
    ops_tokens: list[str] = Field(
        default_factory=lambda: ["api_token_ops"],
        description="Secret names of bearer tokens with the ops role (everything, read-only).",
    )
    auditor_tokens: list[str] = Field(
        default_factory=lambda: ["api_token_auditor"],
        description="Secret names of bearer tokens with the auditor role (KPIs and reports).",
    )
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate chain; with tls_key_secret, serve HTTPS."
    )
    tls_key_secret: str | None = Field(
        None, description="Secret name of the PEM private key for tls_cert_file."
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiSettings:
        if (self.tls_cert_file is None) != (self.tls_key_secret is None):
            raise ValueError("tls_cert_file and tls_key_secret go together")
        return self
