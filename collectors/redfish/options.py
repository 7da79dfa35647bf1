"""Options of a ``[[collectors]]`` table with ``kind = "redfish"``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from agent.patterns import PatternError, expand_entry
from collectors.redfish.profile import Tier

__all__ = ["DeviceDefaults", "DeviceOptions", "RedfishOptions"]


class DeviceOptions(BaseModel):
    """One BMC (or Redfish PDU / cooling unit)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="Device id used in readings.")
    url: str = Field(description="Base URL, e.g. https://10.0.0.17 (no credentials in it).")
    auth: Literal["session", "basic", "none"] = "session"
    username: str | None = None
    password_secret: str | None = Field(
        None, description="Name of the secret (secrets directory) holding the password."
    )
    verify_tls: bool = Field(True, description="Turning it off is logged as a warning.")
    ca_file: Path | None = Field(None, description="CA bundle for this BMC's certificate.")
    timeout_s: float | None = Field(None, gt=0, description="Per-request timeout.")
    interval_s: float | None = Field(None, gt=0)
    prefer: list[Tier] | None = Field(
        None, description="Order of chassis power sources (default: the profile's)."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with https:// (or http://)")
        authority = value.split("://", 1)[1].split("/", 1)[0]
        if "@" in authority:
            # Credentials in a URL end up in logs; they belong in the secrets directory.
            raise ValueError("must not contain credentials; use username and password_secret")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _credentials(self) -> DeviceOptions:
        if self.auth != "none" and (not self.username or not self.password_secret):
            raise ValueError(f"auth = {self.auth!r} needs username and password_secret")
        return self


class DeviceDefaults(BaseModel):
    """``[collectors.defaults]``: what many BMCs share; a device's own setting wins.

    The password only by secret name, as on a device.
    """

    model_config = ConfigDict(extra="forbid")

    auth: Literal["session", "basic", "none"] | None = None
    username: str | None = None
    password_secret: str | None = None
    verify_tls: bool | None = None
    ca_file: Path | None = None
    prefer: list[Tier] | None = None


def _expand_devices(devices: Any, defaults: DeviceDefaults) -> Any:
    """Devices with ranges expanded and the defaults filled in.

    ``name = "gpu-[001-040]"`` with ``url = "https://10.30.0.[11-50]"`` is 40 BMCs
    (agent.patterns).
    """
    if not isinstance(devices, list):
        return devices  # the model's validation names the problem
    shared = defaults.model_dump(exclude_none=True)
    expanded: list[Any] = []
    for i, raw in enumerate(devices):
        if not isinstance(raw, dict):
            expanded.append(raw)
            continue
        try:
            expanded += [{**shared, **one} for one in expand_entry(raw, "name")]
        except PatternError as exc:
            raise ValueError(f"entry {i}: {exc}") from None
    return expanded


class RedfishOptions(BaseModel):
    """The collector: its devices and the limits shared by all of them."""

    model_config = ConfigDict(extra="forbid")

    # Before devices: their validator fills in what the (validated) defaults give.
    defaults: DeviceDefaults = Field(default_factory=DeviceDefaults)
    devices: list[DeviceOptions] = Field(min_length=1)
    interval_s: float = Field(30.0, gt=0, description="Seconds between polls of a device.")
    timeout_s: float = Field(
        60.0, gt=0, description="Per-request timeout (real BMCs take tens of seconds)."
    )
    max_concurrency: int = Field(
        64, ge=1, description="Requests in flight across all devices of this collector."
    )
    rediscover_s: float = Field(
        3600.0, gt=0, description="Walk the tree again after this long (and on any 404)."
    )
    profile: Path | None = Field(None, description="Profile file (default: built-in).")

    @field_validator("devices", mode="before")
    @classmethod
    def _expand(cls, devices: Any, info: ValidationInfo) -> Any:
        # Invalid defaults are absent here and reported as their own field's problem.
        defaults = info.data.get("defaults")
        return _expand_devices(devices, defaults if defaults is not None else DeviceDefaults())

    @model_validator(mode="after")
    def _unique(self) -> RedfishOptions:
        names = [d.name for d in self.devices]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"device names must be unique: {', '.join(dupes)}")
        return self
