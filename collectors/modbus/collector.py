"""The ``modbus`` collector: buses (gateways, serial lines) with units on them, maps as data.

Each device (a unit id on a bus, read with a named map) polls on its own fixed
cadence, like the SNMP collector's devices. A bus lets one request be in flight, so
the units of one RS-485 line take turns while different buses run in parallel, and a
unit that does not answer holds its bus for its own timeout only. A failing device
backs off exponentially and is logged once when it starts failing and once when it
recovers; every failed poll is counted by reason (``timeout``, ``connect``,
``exception_illegal_data_address``, …). Readings of all devices are buffered and
emitted as one batch every ``flush_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent import metrics
from agent.logs import get_logger
from agent.patterns import PatternError, expand_entry
from agent.plugins import CollectorContext
from agent.readings import ReadingBuffer
from agent.settings import AgentSettings, ConfigError, validation_problems
from collectors.health import DeviceHealth, next_poll_slot
from collectors.modbus.client import Bus, BusConfig, ModbusError, Transport
from collectors.modbus.maps import DeviceMap, MapError, load_maps
from collectors.modbus.plan import DevicePlan, needs_split, poll_device

__all__ = ["BusOptions", "DeviceOptions", "ModbusCollector", "ModbusOptions", "build"]

_log = get_logger("modbus")


class BusOptions(BaseModel):
    """One ``[[collectors.buses]]`` entry: a Modbus TCP gateway or meter, or a serial line."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    #: ``tcp`` (Modbus TCP), ``rtu-over-tcp`` (RTU frames through a transparent serial
    #: server) or ``rtu`` (a local serial port).
    transport: Transport = "tcp"
    host: str | None = None
    port: int = Field(502, ge=1, le=65535)
    serial_port: str | None = Field(None, description="e.g. /dev/ttyUSB0 (transport rtu).")
    baudrate: int = Field(9600, ge=300, le=921600)
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1

    @model_validator(mode="after")
    def _where(self) -> BusOptions:
        if self.transport == "rtu":
            if not self.serial_port:
                raise ValueError(f"bus {self.name!r}: transport rtu needs serial_port")
        elif not self.host:
            raise ValueError(f"bus {self.name!r}: transport {self.transport} needs host")
        return self


class _Polling(BaseModel):
    """Per-device polling knobs; set in ``[collectors.defaults]`` or per device."""

    model_config = ConfigDict(extra="forbid")

    interval_s: float | None = Field(None, gt=0)
    jitter_s: float | None = Field(None, ge=0)
    timeout_s: float | None = Field(None, gt=0, le=60)
    retries: int | None = Field(None, ge=0, le=5)
    backoff_max_s: float | None = Field(None, gt=0)
    max_gap: int | None = Field(None, ge=0, le=124)


class _Defaults(_Polling):
    """``[collectors.defaults]``: polling knobs and what many devices share."""

    bus: str | None = None
    map: str | None = None


class DeviceOptions(_Polling):
    """One device (an entry of ``[[collectors.devices]]`` after pattern expansion)."""

    name: str = Field(min_length=1)
    bus: str = ""
    #: Modbus unit id (slave address): 1..247 on a line, 0 or 255 for some TCP meters.
    unit: int = Field(1, ge=0, le=255)
    map: str = ""


_DEFAULTS: dict[str, Any] = {
    "interval_s": 60.0,
    "jitter_s": None,  # default: 10 % of the interval
    "timeout_s": 1.0,
    "retries": 0,
    "backoff_max_s": 600.0,
    "max_gap": 8,
}


def _expand(devices: Any) -> Any:
    """``[[collectors.devices]]`` with ranges expanded (``meter-[1-8]`` with ``unit = "[1-8]"``)."""
    if not isinstance(devices, list):
        return devices
    out: list[Any] = []
    for i, raw in enumerate(devices):
        if not isinstance(raw, dict):
            out.append(raw)
            continue
        try:
            out += expand_entry(raw, "name")
        except PatternError as exc:
            raise ValueError(f"entry {i}: {exc}") from None
    return out


class ModbusOptions(BaseModel):
    """Options of a ``[[collectors]]`` table with ``kind = "modbus"``."""

    model_config = ConfigDict(extra="forbid")

    buses: list[BusOptions] = Field(min_length=1)
    devices: list[DeviceOptions] = Field(min_length=1)
    defaults: _Defaults = Field(default_factory=_Defaults)
    flush_s: float = Field(1.0, gt=0, description="Emit buffered readings this often.")
    maps_dir: Path | None = Field(None, description="Extra map folder (same name wins).")

    @field_validator("devices", mode="before")
    @classmethod
    def _expand_devices(cls, devices: Any) -> Any:
        return _expand(devices)

    @model_validator(mode="after")
    def _check(self) -> ModbusOptions:
        buses = [b.name for b in self.buses]
        dupes = sorted({n for n in buses if buses.count(n) > 1})
        if dupes:
            raise ValueError(f"bus names must be unique: {dupes}")
        names = [d.name for d in self.devices]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"device names must be unique: {dupes}")
        seen: set[tuple[str, int]] = set()
        for d in self.devices:
            d.bus = d.bus or self.defaults.bus or (buses[0] if len(buses) == 1 else "")
            d.map = d.map or self.defaults.map or ""
            if d.bus not in buses:
                raise ValueError(
                    f"device {d.name!r}: bus {d.bus!r} is not one of {buses} "
                    "(give bus on the device or in [collectors.defaults])"
                )
            if not d.map:
                raise ValueError(f"device {d.name!r}: give map (on the device or in defaults)")
            if (d.bus, d.unit) in seen:
                raise ValueError(f"device {d.name!r}: unit {d.unit} is already on bus {d.bus!r}")
            seen.add((d.bus, d.unit))
        return self


def _knob(device: DeviceOptions, defaults: _Polling, name: str) -> Any:
    value = getattr(device, name)
    if value is None:
        value = getattr(defaults, name)
    return _DEFAULTS[name] if value is None else value


@dataclass
class _DeviceState(DeviceHealth):
    options: DeviceOptions
    bus: Bus
    plan: DevicePlan
    label: str
    interval_s: float
    jitter_s: float
    timeout_s: float
    retries: int
    backoff_max_s: float
    backoff_s: float = 0.0
    polls: int = 0
    finished: int = 0
    #: Failed polls by reason (exception codes by name).
    failures: Counter[str] = field(default_factory=Counter)
    #: Longest successful poll, waiting for the bus included (s).
    max_poll_s: float = 0.0


@dataclass
class ModbusCollector:
    """Polls units on Modbus buses; see the module docstring for scheduling."""

    name: str
    options: ModbusOptions
    settings: AgentSettings
    maps: dict[str, DeviceMap]
    buffer: ReadingBuffer = field(default_factory=ReadingBuffer)
    states: dict[str, _DeviceState] = field(default_factory=dict)
    buses: dict[str, Bus] = field(default_factory=dict)
    #: Start every device's first poll at once instead of at a random phase (probe, tests).
    first_poll_now: bool = False

    def polled_devices(self) -> list[str]:
        """The device names this collector's readings carry (``pue-agent check``)."""
        return [d.name for d in self.options.devices]

    def describe(self) -> str:
        """One line for ``pue-agent check``."""
        o = self.options
        by_map = Counter(d.map for d in o.devices)
        intervals = sorted({_knob(d, o.defaults, "interval_s") for d in o.devices})
        return (
            f"modbus: {len(o.devices)} device(s) on {len(o.buses)} bus(es) every "
            f"{'/'.join(f'{i:g}' for i in intervals)} s "
            f"({', '.join(f'{n} {m}' for m, n in sorted(by_map.items()))})"
        )

    def _bus_config(self, b: BusOptions) -> BusConfig:
        timeouts = [
            float(_knob(d, self.options.defaults, "timeout_s"))
            for d in self.options.devices
            if d.bus == b.name
        ]
        return BusConfig(
            name=b.name,
            transport=b.transport,
            host=b.host or "",
            port=b.port,
            serial_port=b.serial_port or "",
            baudrate=b.baudrate,
            bytesize=b.bytesize,
            parity=b.parity,
            stopbits=b.stopbits,
            timeout_s=max(timeouts, default=1.0),
        )

    def _setup(self) -> None:
        o = self.options
        for b in o.buses:
            self.buses[b.name] = Bus(self._bus_config(b))
        for d in o.devices:
            bus = self.buses[d.bus]
            interval = float(_knob(d, o.defaults, "interval_s"))
            jitter = _knob(d, o.defaults, "jitter_s")
            self.states[d.name] = _DeviceState(
                options=d,
                bus=bus,
                plan=DevicePlan(self.maps[d.map], max_gap=int(_knob(d, o.defaults, "max_gap"))),
                label=f"{d.name} (unit {d.unit} on {d.bus}, {bus.config.describe()})",
                interval_s=interval,
                jitter_s=interval * 0.1 if jitter is None else float(jitter),
                timeout_s=float(_knob(d, o.defaults, "timeout_s")),
                retries=int(_knob(d, o.defaults, "retries")),
                backoff_max_s=float(_knob(d, o.defaults, "backoff_max_s")),
            )

    async def run(self, ctx: CollectorContext) -> None:
        """Poll every device until cancelled (a second run keeps the devices' state)."""
        if not self.states:
            self._setup()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._flusher(ctx), name=f"{self.name}:flush")
                for state in self.states.values():
                    group.create_task(
                        self._device_loop(ctx, state), name=f"{self.name}:{state.options.name}"
                    )
        finally:
            if self.buffer:
                with contextlib.suppress(Exception):
                    await asyncio.shield(ctx.emit(self.buffer.take()))
            for bus in self.buses.values():
                bus.close()

    async def _flusher(self, ctx: CollectorContext) -> None:
        while True:
            await asyncio.sleep(self.options.flush_s)
            if self.buffer:
                await ctx.emit(self.buffer.take())

    async def _device_loop(self, ctx: CollectorContext, state: _DeviceState) -> None:
        loop = asyncio.get_running_loop()
        interval = state.interval_s
        # Spread devices over the interval so a line's units do not queue in one burst.
        slot = loop.time() + (0.0 if self.first_poll_now else random.uniform(0, interval))
        task = asyncio.current_task()
        while True:
            due = slot + (random.uniform(0, state.jitter_s) if state.jitter_s else 0.0)
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if task is not None and task.cancelling():
                # pymodbus awaits answers with asyncio.wait_for, which on Python 3.11 drops a
                # cancellation that arrives together with the answer: the task was told to
                # stop, so stop here rather than poll on (the agent would never shut down).
                raise asyncio.CancelledError
            started = loop.time()
            state.polls += 1
            metrics.POLLS.labels(ctx.name, state.options.name).inc()
            ok = await self.poll_once(ctx.name, state)
            state.finished += 1
            now = loop.time()
            if ok:
                metrics.POLL_SECONDS.labels(ctx.name).observe(now - started)
                state.max_poll_s = max(state.max_poll_s, now - started)
            slot, state.backoff_s = next_poll_slot(
                slot,
                now,
                interval,
                ok=ok,
                backoff_s=state.backoff_s,
                backoff_max_s=state.backoff_max_s,
            )

    async def poll_once(self, collector: str, state: _DeviceState) -> bool:
        """Poll one device once (with its retries); logs and counts a failure.

        Returns:
            Whether the poll produced readings.
        """
        device = state.options.name
        attempt = 0
        while True:
            try:
                result = await poll_device(
                    state.bus,
                    state.label,
                    device,
                    state.options.unit,
                    state.plan,
                    self.buffer,
                    timeout_s=state.timeout_s,
                )
                break
            except Exception as exc:  # noqa: BLE001 - one device's trouble must not stop others
                if needs_split(exc, state.plan):
                    # The unit refuses to read through unmapped registers: read exactly the
                    # mapped runs from now on (logged once, it is a property of the device).
                    state.plan = state.plan.without_holes()
                    _log.info(
                        "unit refuses reads across unmapped registers; reading without holes",
                        collector=collector,
                        device=device,
                        requests_per_poll=len(state.plan.blocks),
                    )
                    continue
                timed_out = isinstance(exc, ModbusError) and exc.reason == "timeout"
                if timed_out and attempt < state.retries:
                    attempt += 1
                    continue
                self._failed(collector, state, exc)
                return False
        if state.mark_recovered(_log, collector=collector, device=device):
            state.backoff_s = 0.0
        if result.bad_values:
            metrics.READINGS_REJECTED.labels(collector, "modbus_bad_value").inc(result.bad_values)
        return True

    def _failed(self, collector: str, state: _DeviceState, exc: Exception) -> None:
        device = state.options.name
        if not isinstance(exc, ModbusError):
            # A bug or an answer nobody foresaw: keep the traceback, count it as a failure.
            _log.exception("poll crashed", collector=collector, device=device)
            exc = ModbusError(f"internal error: {type(exc).__name__}")
        state.failures[exc.reason] += 1
        metrics.POLL_FAILURES.labels(collector, device, exc.reason).inc()
        state.mark_failed(
            _log, collector=collector, device=device, reason=exc.reason, error=str(exc)
        )


def build(name: str, options: dict[str, Any], settings: AgentSettings) -> ModbusCollector:
    """Build a Modbus collector from its config table.

    Raises:
        ConfigError: naming ``collectors.<name>.<field>`` for a bad option, an unknown map
            or a broken map file.
    """
    try:
        parsed = ModbusOptions.model_validate(options)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, f"collectors.{name}.")) from None
    extra = [settings.resolve(parsed.maps_dir)] if parsed.maps_dir else []
    try:
        maps = load_maps(extra)
    except MapError as exc:
        raise ConfigError(f"collectors.{name}.maps_dir: {exc}") from None
    for i, d in enumerate(parsed.devices):
        if d.map not in maps:
            raise ConfigError(
                f"collectors.{name}.devices.{i}.map: unknown map {d.map!r} "
                f"(known: {', '.join(sorted(maps))})"
            )
    return ModbusCollector(name=name, options=parsed, settings=settings, maps=maps)
