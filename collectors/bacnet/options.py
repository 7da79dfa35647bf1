"""Options of a ``[[collectors]]`` table with ``kind = "bacnet"``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.patterns import PatternError, expand_entry
from collectors.bacnet.client import device_address

__all__ = ["BacnetOptions", "DeviceOptions"]

#: Device instances are 22 bits; 4194303 is the "unconfigured" wildcard.
MAX_DEVICE_ID = 4194302


class DeviceOptions(BaseModel):
    """One BACnet device (a chiller controller, a cooling tower, a CRAH...)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="Device id used in readings.")
    address: str = Field(
        description="10.0.0.5 (port 47808), 10.0.0.5:47809, or NET:MAC behind a router."
    )
    device_id: int = Field(ge=0, le=MAX_DEVICE_ID, description="The device object's instance.")
    map: str = Field(min_length=1, description="Object map name (maps/*.toml or maps_dir).")
    objects: dict[str, str] = Field(
        default_factory=dict, description="Per point: this device's object, e.g. analog-input,7."
    )
    interval_s: float | None = Field(None, gt=0)
    cov: Literal["auto", "off"] | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        device_address(value)
        return value


class BacnetOptions(BaseModel):
    """The collector: its devices and what they share."""

    model_config = ConfigDict(extra="forbid")

    devices: list[DeviceOptions] = Field(min_length=1)
    local_address: str = Field(
        "0.0.0.0:47808",
        description="UDP address the client binds (port 0 picks one; BACnet's is 47808).",
    )
    local_device_id: int = Field(
        4194302, ge=0, le=MAX_DEVICE_ID, description="The agent's own device instance."
    )
    interval_s: float = Field(30.0, gt=0, description="Seconds between polls of a device.")
    timeout_s: float = Field(3.0, gt=0, description="APDU timeout per try.")
    retries: int = Field(1, ge=0, le=5, description="APDU retries after a timeout.")
    max_objects_per_request: int = Field(
        16, ge=1, le=64, description="Objects per ReadPropertyMultiple (4 properties each)."
    )
    cov: Literal["auto", "off"] = Field(
        "auto", description="auto: subscribe where the device supports COV, else poll."
    )
    cov_lifetime_s: int = Field(300, ge=10, description="SubscribeCOV lifetime; renewed before.")
    cov_heartbeat_s: float | None = Field(
        None,
        gt=0,
        le=840.0,
        description=(
            "With COV: full read this often (default interval_s; under the 15-min silence"
            " threshold, and a steady value is only re-sent by a full read)."
        ),
    )
    maps_dir: Path | None = Field(None, description="Extra object maps (same name replaces).")

    @field_validator("devices", mode="before")
    @classmethod
    def _expand(cls, devices: Any) -> Any:
        """``name = "crah-[01-06]"`` with ``address = "10.40.0.[21-26]"`` is six devices.

        A ``device_id`` range is written as a string (``"[201-206]"``).
        """
        if not isinstance(devices, list):
            return devices  # the model's validation names the problem
        expanded: list[Any] = []
        for i, raw in enumerate(devices):
            if not isinstance(raw, dict):
                expanded.append(raw)
                continue
            try:
                expanded += expand_entry(raw, "name")
            except PatternError as exc:
                raise ValueError(f"entry {i}: {exc}") from None
        return expanded

    @field_validator("local_address")
    @classmethod
    def _local(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be HOST:PORT, e.g. 0.0.0.0:47808")
        return value

    @model_validator(mode="after")
    def _unique(self) -> BacnetOptions:
        names = [d.name for d in self.devices]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"device names must be unique: {', '.join(dupes)}")
        return self
