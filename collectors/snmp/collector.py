"""The ``snmp`` collector: one poll loop per device, a global concurrency limit, batched emits.

Scheduling keeps each device on its own fixed cadence (``interval_s`` plus a
random jitter per poll, never drifting), so a slow or dead device only moves
its own schedule. Failing devices back off exponentially and poll under their
own small concurrency allowance, so even many black holes cannot take the
slots healthy devices need. A device is logged once when it starts failing and
once when it recovers. Readings of all devices are buffered and emitted as one
batch every ``flush_s`` (one journal commit instead of one per poll).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from agent import metrics
from agent.logs import get_logger
from agent.patterns import expand_entry
from agent.plugins import CollectorContext
from agent.settings import AgentSettings, ConfigError, read_secret, validation_problems
from collectors.health import DeviceHealth, next_poll_slot
from collectors.snmp.client import (
    AuthProtocol,
    PrivProtocol,
    PysnmpSession,
    Session,
    SnmpError,
    UdpDispatcher,
    V2cSession,
    V3Credentials,
    V3Session,
    close_engine,
    new_engine,
)
from collectors.snmp.detect import detect_plan
from collectors.snmp.poller import DevicePlan, Poller, ReadingBuffer, detect
from collectors.snmp.profiles import (
    Profile,
    ProfileError,
    choose_profile,
    load_profiles,
    matching_quirks,
)

__all__ = [
    "DeviceOptions",
    "NoProfileError",
    "SnmpCollector",
    "SnmpOptions",
    "V3Options",
    "build",
    "make_session",
    "resolve_plan",
]

_log = get_logger("snmp")


class NoProfileError(SnmpError):
    """No profile matches the device (or the configured one does not exist)."""

    reason = "no_profile"


class V3Options(BaseModel):
    """SNMPv3 USM settings of a device; keys are named secrets, never inline."""

    model_config = ConfigDict(extra="forbid")

    user: str
    auth_protocol: AuthProtocol = "SHA256"
    auth_key_secret: str | None = Field(None, description="Secret name of the auth key.")
    priv_protocol: PrivProtocol = "AES"
    priv_key_secret: str | None = Field(None, description="Secret name of the privacy key.")
    context: str = ""
    engine_id: str | None = Field(None, description="Agent engine id (hex); default discover.")


class _Polling(BaseModel):
    """Per-device polling knobs; set in ``[defaults]`` or per device."""

    model_config = ConfigDict(extra="forbid")

    interval_s: float | None = Field(None, gt=0)
    jitter_s: float | None = Field(None, ge=0)
    timeout_s: float | None = Field(None, gt=0)
    retries: int | None = Field(None, ge=0, le=10)
    backoff_max_s: float | None = Field(None, gt=0)
    max_repetitions: int | None = Field(None, ge=1, le=1000)
    bulk: bool | None = None
    max_oids_per_pdu: int | None = Field(None, ge=1, le=200)


class _Defaults(_Polling):
    """``[collectors.defaults]``: polling knobs, and what many devices share.

    Credentials only by secret name (a community or v3 keys inline would be copied into
    every device and every error message); a device's own setting wins.
    """

    port: int | None = Field(None, ge=1, le=65535)
    community_secret: str | None = Field(None, description="Secret name of the community.")
    v3: V3Options | None = None
    profile: str | None = None

    @model_validator(mode="after")
    def _one_auth(self) -> _Defaults:
        if self.community_secret is not None and self.v3 is not None:
            raise ValueError("give community_secret or v3, not both")
        return self


class DeviceOptions(_Polling):
    """One device (an entry of ``[[collectors.devices]]`` after pattern expansion)."""

    name: str = Field(min_length=1)
    host: str = Field(min_length=1)
    port: int = Field(161, ge=1, le=65535)
    community: str | None = Field(None, description="v2c community (prefer community_secret).")
    community_secret: str | None = Field(None, description="Secret name of the community.")
    v3: V3Options | None = None
    profile: str = "auto"
    #: ``None`` = the profile's quirks that match the device; a list forces exactly these.
    quirks: list[str] | None = None

    @model_validator(mode="after")
    def _one_auth(self) -> DeviceOptions:
        # None at all is fine here: [defaults] may supply them (checked in SnmpOptions).
        given = sum(x is not None for x in (self.community, self.community_secret, self.v3))
        if given > 1:
            raise ValueError("give exactly one of community, community_secret or v3")
        return self


def _expand_devices(devices: Any) -> Any:
    """``[[collectors.devices]]`` with ranges and host lists expanded, one entry per device.

    ``name = "pdu-[001-200]"`` with ``host = "10.20.1.[11-210]"`` (a range of the same
    length) or ``hosts = [...]`` (as many as the name expands to) is 200 devices.
    """
    if not isinstance(devices, list):
        return devices  # the model's validation names the problem
    expanded: list[Any] = []
    for i, raw in enumerate(devices):
        if not isinstance(raw, dict):
            expanded.append(raw)
            continue
        entry = dict(raw)
        hosts = entry.pop("hosts", None)
        try:
            if hosts is not None:
                if "host" in entry:
                    raise ValueError("give host or hosts, not both")
                if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
                    raise ValueError("hosts: expected a list of host names or addresses")
                if not hosts:
                    raise ValueError("hosts: the list is empty")
                # Other fields may hold ranges in step with the name's (agent.patterns).
                entries = expand_entry(entry, "name")
                if len(entries) != len(hosts):
                    raise ValueError(
                        f"name {entry.get('name')!r} expands to {len(entries)} device(s) but "
                        f"hosts lists {len(hosts)}; write a range such as "
                        f"\"pdu-[1-{len(hosts)}]\""
                    )
                expanded += [
                    {**one, "host": host} for one, host in zip(entries, hosts, strict=True)
                ]
            else:
                expanded += expand_entry(entry, "name")
        except ValueError as exc:  # PatternError is one
            raise ValueError(f"entry {i}: {exc}") from None
    return expanded


class SnmpOptions(BaseModel):
    """Options of a ``[[collectors]]`` table with ``kind = "snmp"``."""

    model_config = ConfigDict(extra="forbid")

    devices: list[DeviceOptions] = Field(min_length=1)
    defaults: _Defaults = Field(default_factory=_Defaults)
    max_concurrent: int = Field(256, ge=1, description="Polls in flight at once (healthy).")
    max_concurrent_failing: int = Field(
        16,
        ge=1,
        description="Polls in flight at once for failing devices (own pool, so "
        "black holes cannot hold the slots healthy devices need).",
    )
    flush_s: float = Field(1.0, gt=0, description="Emit buffered readings this often.")
    profiles_dir: Path | None = Field(None, description="Extra profile folder (same name wins).")
    allow_des: bool = Field(False, description="Permit DES privacy and MD5 auth (insecure).")
    engine: Literal["auto", "pysnmp"] = Field(
        "auto", description="auto: lean v2c and v3 codec; pysnmp: pysnmp for all (reference)."
    )

    @field_validator("devices", mode="before")
    @classmethod
    def _expand(cls, devices: Any) -> Any:
        return _expand_devices(devices)

    @model_validator(mode="after")
    def _check(self) -> SnmpOptions:
        shared = self.defaults
        for d in self.devices:
            if d.community is None and d.community_secret is None and d.v3 is None:
                if shared.community_secret is None and shared.v3 is None:
                    raise ValueError(
                        f"device {d.name!r}: give community_secret or v3 "
                        "(on the device or in [collectors.defaults])"
                    )
                d.community_secret = shared.community_secret
                d.v3 = shared.v3
            if "port" not in d.model_fields_set and shared.port is not None:
                d.port = shared.port
            if "profile" not in d.model_fields_set and shared.profile is not None:
                d.profile = shared.profile
        names = [d.name for d in self.devices]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"device names must be unique: {dupes}")
        if not self.allow_des:
            for d in self.devices:
                if d.v3 and (d.v3.priv_protocol == "DES" or d.v3.auth_protocol == "MD5"):
                    raise ValueError(
                        f"device {d.name!r}: DES/MD5 are insecure; set allow_des = true to use them"
                    )
        return self


_DEFAULTS = {
    "interval_s": 60.0,
    "jitter_s": None,  # default: 10 % of the interval
    "timeout_s": 2.0,
    "retries": 1,
    "backoff_max_s": 600.0,
    "max_repetitions": 25,
    "bulk": True,
    "max_oids_per_pdu": 40,
}


def _knob(device: DeviceOptions, defaults: _Polling, name: str) -> Any:
    value = getattr(device, name)
    if value is None:
        value = getattr(defaults, name)
    return _DEFAULTS[name] if value is None else value


def make_session(
    host: str,
    port: int,
    *,
    community: SecretStr | None,
    v3: V3Credentials | None,
    timeout_s: float,
    retries: int,
    dispatcher: UdpDispatcher | None,
    engine: Any,
    label: str,
) -> Session:
    """The right session for a device: lean v2c/v3 when a dispatcher is given, else pysnmp."""
    if dispatcher is not None:
        if v3 is not None:
            return V3Session(dispatcher, host, port, v3, timeout_s, retries, label)
        assert community is not None
        return V2cSession(dispatcher, host, port, community, timeout_s, retries, label)
    return PysnmpSession(
        engine,
        host,
        port,
        community=community,
        v3=v3,
        timeout_s=timeout_s,
        retries=retries,
        label=label,
    )


async def resolve_plan(
    session: Session,
    profiles: dict[str, Profile],
    profile_name: str,
    quirks: list[str] | None,
    max_oids_per_pdu: int,
) -> DevicePlan:
    """Pick the profile (auto-detected or named) and quirks for a device and compile its plan.

    Raises:
        NoProfileError: if no profile matches or the named one does not exist.
        SnmpError: if the device does not answer detection.
    """
    if profile_name == "auto" and quirks is None:
        # Match rules, then one trial poll per candidate that must read plausible values.
        found = await detect_plan(session, profiles.values(), max_oids_per_pdu=max_oids_per_pdu)
        if found.plan is None:
            refused = found.explain()
            raise NoProfileError(
                f"{session.label}: no profile matches this device "
                f"(sysObjectID {found.facts.sys_object_id or 'not readable'})"
                + (f"; refused: {refused}" if refused else "")
                + "; name one with --profile/profile, add a profile file "
                "(`probe snmp --suggest` drafts one), or send `probe snmp --dump` output"
            )
        return found.plan
    if profile_name != "auto":
        profile = profiles.get(profile_name)
        if profile is None:
            raise NoProfileError(
                f"{session.label}: profile {profile_name!r} not found "
                f"(known: {', '.join(sorted(profiles))})"
            )
        candidates = [profile]
    else:
        candidates = list(profiles.values())
    facts = await detect(session, candidates)
    if profile_name == "auto":
        chosen = choose_profile(candidates, facts)
        if chosen is None:
            raise NoProfileError(
                f"{session.label}: no profile matches this device "
                f"(sysObjectID {facts.sys_object_id or 'not readable'}); name one with "
                "--profile/profile, or add a profile file"
            )
        profile = chosen
    assert profile is not None
    active = quirks if quirks is not None else matching_quirks(profile, facts)
    try:
        return DevicePlan(profile, active, max_oids_per_pdu=max_oids_per_pdu)
    except ProfileError as exc:
        raise NoProfileError(f"{session.label}: {exc}") from None


@dataclass
class _DeviceState(DeviceHealth):
    options: DeviceOptions
    session: Session
    interval_s: float
    jitter_s: float
    backoff_max_s: float
    max_repetitions: int
    bulk: bool
    max_oids_per_pdu: int
    poller: Poller | None = None
    backoff_s: float = 0.0
    polls: int = 0
    #: Polls that finished (successfully or not).
    finished: int = 0
    late: int = 0
    #: Monotonic start time of every poll (tests check the cadence with it).
    starts: list[float] = field(default_factory=list)


@dataclass
class SnmpCollector:
    """Polls a list of SNMP devices; see the module docstring for scheduling."""

    name: str
    options: SnmpOptions
    settings: AgentSettings
    profiles: dict[str, Profile]
    buffer: ReadingBuffer = field(default_factory=ReadingBuffer)
    states: dict[str, _DeviceState] = field(default_factory=dict)
    record_starts: bool = False
    #: Start every device's first poll at once instead of at a random phase (probe, tests).
    first_poll_now: bool = False

    def polled_devices(self) -> list[str]:
        """The device names this collector's readings carry (``pue-agent check``)."""
        return [d.name for d in self.options.devices]

    def describe(self) -> str:
        """One line for ``pue-agent check``."""
        n = len(self.options.devices)
        intervals = sorted(
            {_knob(d, self.options.defaults, "interval_s") for d in self.options.devices}
        )
        # Per profile: after range entries expand, the operator sees what a line became.
        by_profile = Counter(d.profile for d in self.options.devices)
        return (
            f"snmp: {n} device(s) every {'/'.join(f'{i:g}' for i in intervals)} s, "
            f"{len(self.profiles)} profiles, at most {self.options.max_concurrent} polls at once"
            f" ({', '.join(f'{count} {name}' for name, count in sorted(by_profile.items()))})"
        )

    def _credentials(self, d: DeviceOptions) -> tuple[SecretStr | None, V3Credentials | None]:
        if d.v3 is not None:
            v3 = d.v3
            auth = read_secret(v3.auth_key_secret, self.settings) if v3.auth_key_secret else None
            priv = read_secret(v3.priv_key_secret, self.settings) if v3.priv_key_secret else None
            return None, V3Credentials(
                user=v3.user,
                auth_protocol=v3.auth_protocol,
                auth_key=auth,
                priv_protocol=v3.priv_protocol,
                priv_key=priv,
                context=v3.context,
                engine_id=v3.engine_id,
            )
        if d.community_secret is not None:
            return read_secret(d.community_secret, self.settings), None
        assert d.community is not None
        return SecretStr(d.community), None

    @property
    def late_polls(self) -> int:
        """Polls that started later than allowed, over all devices."""
        return sum(s.late for s in self.states.values())

    @property
    def total_polls(self) -> int:
        """Polls started, over all devices."""
        return sum(s.polls for s in self.states.values())

    async def run(self, ctx: CollectorContext) -> None:
        """Poll every device until cancelled."""
        o = self.options
        dispatcher: UdpDispatcher | None = None
        engine: Any = None
        if o.engine == "auto":
            dispatcher = UdpDispatcher()
            await dispatcher.open()
        else:
            engine = new_engine()
        healthy = asyncio.Semaphore(o.max_concurrent)
        failing = asyncio.Semaphore(o.max_concurrent_failing)
        try:
            for d in o.devices:
                community, v3 = self._credentials(d)
                interval = float(_knob(d, o.defaults, "interval_s"))
                jitter = _knob(d, o.defaults, "jitter_s")
                self.states[d.name] = _DeviceState(
                    options=d,
                    session=make_session(
                        d.host,
                        d.port,
                        community=community,
                        v3=v3,
                        timeout_s=float(_knob(d, o.defaults, "timeout_s")),
                        retries=int(_knob(d, o.defaults, "retries")),
                        dispatcher=dispatcher,
                        engine=engine,
                        label=f"{d.name} ({d.host}:{d.port})",
                    ),
                    interval_s=interval,
                    jitter_s=interval * 0.1 if jitter is None else float(jitter),
                    backoff_max_s=float(_knob(d, o.defaults, "backoff_max_s")),
                    max_repetitions=int(_knob(d, o.defaults, "max_repetitions")),
                    bulk=bool(_knob(d, o.defaults, "bulk")),
                    max_oids_per_pdu=int(_knob(d, o.defaults, "max_oids_per_pdu")),
                )
            async with asyncio.TaskGroup() as group:
                group.create_task(self._flusher(ctx), name=f"{self.name}:flush")
                for state in self.states.values():
                    group.create_task(
                        self._device_loop(ctx, state, healthy, failing),
                        name=f"{self.name}:{state.options.name}",
                    )
        finally:
            if self.buffer:
                with contextlib.suppress(Exception):
                    await asyncio.shield(ctx.emit(self.buffer.take()))
            if dispatcher is not None:
                dispatcher.close()
            if engine is not None:
                close_engine(engine)

    async def _flusher(self, ctx: CollectorContext) -> None:
        while True:
            await asyncio.sleep(self.options.flush_s)
            if self.buffer:
                await ctx.emit(self.buffer.take())

    async def _device_loop(
        self,
        ctx: CollectorContext,
        state: _DeviceState,
        healthy: asyncio.Semaphore,
        failing: asyncio.Semaphore,
    ) -> None:
        loop = asyncio.get_running_loop()
        interval = state.interval_s
        # Spread devices over the interval so polls do not arrive in one burst.
        slot = loop.time() + (0.0 if self.first_poll_now else random.uniform(0, interval))
        late_after = min(0.5, 0.1 * interval)
        device = state.options.name
        while True:
            due = slot + (random.uniform(0, state.jitter_s) if state.jitter_s else 0.0)
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > late_after:
                state.late += 1
            started = loop.time()
            if self.record_starts:
                state.starts.append(started)
            state.polls += 1
            metrics.POLLS.labels(ctx.name, device).inc()
            limit = failing if state.failing else healthy
            async with limit:
                ok = await self._poll_once(ctx, state)
            state.finished += 1
            now = loop.time()
            if ok:
                metrics.POLL_SECONDS.labels(ctx.name).observe(now - started)
            slot, state.backoff_s = next_poll_slot(
                slot,
                now,
                interval,
                ok=ok,
                backoff_s=state.backoff_s,
                backoff_max_s=state.backoff_max_s,
            )

    async def _poll_once(self, ctx: CollectorContext, state: _DeviceState) -> bool:
        device = state.options.name
        try:
            if state.poller is None:
                plan = await resolve_plan(
                    state.session,
                    self.profiles,
                    state.options.profile,
                    state.options.quirks,
                    state.max_oids_per_pdu,
                )
                state.poller = Poller(
                    device,
                    state.session,
                    plan,
                    max_repetitions=state.max_repetitions,
                    bulk=state.bulk,
                )
                _log.info(
                    "device profile", collector=ctx.name, device=device, profile=plan.describe()
                )
            fallback_before = state.poller.bulk_fallback
            result = await state.poller.poll(self.buffer)
            if state.poller.bulk_fallback and not fallback_before:
                _log.warning(
                    "GETBULK failed, walking with GETNEXT from now on",
                    collector=ctx.name,
                    device=device,
                )
        except Exception as exc:  # noqa: BLE001 - one device's trouble must not stop the others
            if not isinstance(exc, SnmpError):
                # A bug or an answer nobody foresaw: keep the traceback, treat as a failed poll.
                _log.exception("poll crashed", collector=ctx.name, device=device)
                exc = SnmpError(f"internal error: {type(exc).__name__}")
            metrics.POLL_FAILURES.labels(ctx.name, device, exc.reason).inc()
            state.mark_failed(
                _log, collector=ctx.name, device=device, reason=exc.reason, error=str(exc)
            )
            return False
        if state.mark_recovered(_log, collector=ctx.name, device=device):
            state.backoff_s = 0.0
        if result.bad_values or result.bad_index:
            metrics.READINGS_REJECTED.labels(ctx.name, "snmp_bad_value").inc(
                result.bad_values + result.bad_index
            )
        return True


def build(name: str, options: dict[str, Any], settings: AgentSettings) -> SnmpCollector:
    """Build an SNMP collector from its config table.

    Raises:
        ConfigError: naming ``collectors.<name>.<field>`` for a bad option, an unknown
            profile or quirk, a broken profile file or a missing secret.
    """
    try:
        parsed = SnmpOptions.model_validate(options)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, f"collectors.{name}.")) from None
    extra = [settings.resolve(parsed.profiles_dir)] if parsed.profiles_dir else []
    try:
        profiles = load_profiles(extra)
    except ProfileError as exc:
        raise ConfigError(f"collectors.{name}.profiles_dir: {exc}") from None
    for i, d in enumerate(parsed.devices):
        if d.profile != "auto" and d.profile not in profiles:
            raise ConfigError(
                f"collectors.{name}.devices.{i}.profile: unknown profile {d.profile!r} "
                f"(known: {', '.join(sorted(profiles))})"
            )
        if d.profile != "auto" and d.quirks:
            unknown = set(d.quirks) - set(profiles[d.profile].quirks)
            if unknown:
                raise ConfigError(
                    f"collectors.{name}.devices.{i}.quirks: unknown quirk(s) {sorted(unknown)}"
                )
    collector = SnmpCollector(name=name, options=parsed, settings=settings, profiles=profiles)
    # Read secrets now: a missing one is a start-up error, not a poll failure.
    for d in parsed.devices:
        collector._credentials(d)
    return collector
