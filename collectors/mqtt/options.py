"""Options of a ``[[collectors]]`` table with ``kind = "mqtt"`` (see ``sample.toml``)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["MqttOptions", "Subscription"]


class Subscription(BaseModel):
    """One topic filter to subscribe to and its QoS."""

    model_config = ConfigDict(extra="forbid")

    topic: str
    qos: Literal[0, 1, 2] = 1


class MqttOptions(BaseModel):
    """Broker, security, session, mapping and batching options."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(description="Broker host name or address.")
    port: int | None = Field(None, ge=1, le=65535, description="Default 1883, 8883 with TLS.")
    protocol: Literal["3.1.1", "5"] = "5"
    client_id: str | None = Field(
        None, description="Fixed client id (the persistent session's key); default per host."
    )
    username: str | None = None
    password_secret: str | None = Field(
        None, description="Name of the secret holding the password (secrets directory)."
    )
    tls: bool = False
    ca_file: Path | None = Field(None, description="CA bundle (default: system CAs).")
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    tls_check_hostname: bool = True
    mappings: list[str] = Field(
        min_length=1, description="Built-in mapping names or TOML file paths."
    )
    qos: Literal[0, 1, 2] = Field(1, description="QoS for subscriptions taken from mappings.")
    subscriptions: list[Subscription] = Field(
        default_factory=list, description="Topic filters; default: every mapping rule's topic."
    )
    persistent_session: bool = True
    session_expiry_s: int = Field(7 * 24 * 3600, ge=0, le=0xFFFFFFFF)
    receive_maximum: int = Field(
        2000, ge=1, le=65535, description="MQTT 5: unacknowledged QoS 1/2 messages in flight."
    )
    keepalive_s: int = Field(30, ge=5, le=65535)
    batch_max_messages: int = Field(5000, ge=1)
    batch_linger_s: float = Field(0.1, gt=0, le=10)
    batch_idle_s: float = Field(0.005, gt=0, le=10)
    max_pending_messages: int = Field(200_000, ge=1)
    max_payload_bytes: int = Field(65_536, ge=1)
    max_skew_s: float = Field(300.0, ge=0)
    dedupe_window_s: float = Field(
        30.0,
        ge=0,
        description="After each (re)connect, also drop copies without the DUP flag of "
        "recently journalled QoS 1/2 messages: a restarted broker re-sends its saved queue, "
        "and publishers re-send what it had not acknowledged, as new messages.",
    )
    dedupe_memory: int = Field(
        65_536, ge=0, description="Journalled QoS 1/2 messages remembered for de-duplication."
    )
    reconnect_initial_s: float = Field(1.0, gt=0)
    reconnect_max_s: float = Field(60.0, gt=0)
    watch_broker_drops: bool = Field(
        True, description="Follow $SYS/broker/publish/messages/dropped (mosquitto)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> MqttOptions:
        if (self.client_cert_file is None) != (self.client_key_file is None) and (
            self.client_key_file is not None
        ):
            raise ValueError("client_key_file needs client_cert_file")
        if (self.ca_file or self.client_cert_file) and not self.tls:
            raise ValueError("ca_file / client_cert_file need tls = true")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be >= reconnect_initial_s")
        return self

    def broker_port(self) -> int:
        """The port, defaulting by TLS."""
        return self.port or (8883 if self.tls else 1883)

    def identifier(self, collector: str) -> str:
        """The client id: fixed across restarts so the broker keeps our session."""
        return self.client_id or f"pue-agent-{socket.gethostname()}-{collector}"[:64]
