"""The ``snmp`` collector: one schedule for all devices, a global concurrency limit, batched emits.

Scheduling keeps each device on its own fixed cadence (``interval_s`` plus a
random jitter per poll, never drifting), so a slow or dead device only moves
its own schedule. Failing devices back off exponentially and poll under their
own small concurrency allowance, so even many black holes cannot take the
slots healthy devices need. A device is logged once when it starts failing and
once when it recovers. Readings of all devices are buffered and emitted as one
batch every ``flush_s`` (one journal commit instead of one per poll).

A poll of a healthy v2c device costs tens of microseconds of codec and socket work,
so the collector's own bookkeeping must cost less than that: the due polls of every
device sit in one heap behind one loop timer (polls due within a few milliseconds of
each other start in one wake-up), and poll counters and latencies reach Prometheus
once per flush instead of once per poll.

Secrets are read at start. When a device fails with an SNMPv3 authentication error
(or, for a community from a secret file, a timeout: a wrong community is not
answered), its secrets are read again, at most once per backoff period; if they
changed, the device gets a new session (keys localized afresh) and polls at once.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import functools
import heapq
import itertools
import math
import random
import time
from collections import Counter
from collections.abc import Callable
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
from agent.readings import ReadingBuffer
from agent.settings import AgentSettings, ConfigError, read_secret, validation_problems
from collectors.health import DeviceHealth, next_poll_slot
from collectors.snmp import ber
from collectors.snmp.client import (
    AuthProtocol,
    PrivProtocol,
    PysnmpSession,
    Session,
    SnmpAgentError,
    SnmpError,
    UdpDispatcher,
    V2cSession,
    V3Credentials,
    V3Session,
    close_engine,
    new_engine,
)
from collectors.snmp.detect import detect_plan
from collectors.snmp.poller import DevicePlan, Poller, PollResult, detect
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
                        f'"pdu-[1-{len(hosts)}]"'
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


@dataclass(eq=False)
class _DeviceState(DeviceHealth):
    options: DeviceOptions
    session: Session
    interval_s: float
    jitter_s: float
    backoff_max_s: float
    max_repetitions: int
    bulk: bool
    max_oids_per_pdu: int
    timeout_s: float
    retries: int
    #: The credentials the session was built with (compared after a re-read).
    community: SecretStr | None
    v3: V3Credentials | None
    poller: Poller | None = None
    backoff_s: float = 0.0
    polls: int = 0
    #: Polls that finished (successfully or not).
    finished: int = 0
    late: int = 0
    #: Monotonic start time of every poll (tests check the cadence with it).
    starts: list[float] = field(default_factory=list)
    #: Set by the schedule when the device's next poll is due; in lane mode, set only
    #: when a poll needs the device's task (a :class:`_HandBack`).
    wake: asyncio.Future[_HandBack | None] | None = None
    #: The fixed slot of the device's next poll (loop time; jitter comes on top).
    slot: float = 0.0
    #: Polls starting this long after their slot are late.
    late_after: float = 0.5
    #: The schedule makes this device's polls itself (see :meth:`SnmpCollector._lane_poll`).
    lane: bool = False
    #: Good polls made that way.
    lane_polls: int = 0
    #: The lane's request: for this session and PDU (both change rarely), this template.
    lane_request: tuple[V2cSession, list[bytes], ber.RequestTemplate] | None = None
    #: Polls already added to the Prometheus counter, and whether more are pending.
    polls_published: int = 0
    pending_metrics: bool = False
    polls_counter: Any = None
    #: Loop time of the last secret re-read after a failure.
    secrets_read_at: float = -math.inf


#: The longest a poll waits for others due soon after it, to start in the same wake-up.
_MAX_COALESCE_S = 0.1

#: Failure reasons after which a device's secrets are read again: the operator may have
#: rotated a key (SNMPv3) or a community (not answered at all, so a timeout).
_REREAD_REASONS = frozenset(
    {"auth_wrong_key", "auth_wrong_priv_key", "auth_unknown_user", "auth", "timeout"}
)


@dataclass(frozen=True, slots=True)
class _HandBack:
    """A poll the schedule started (lane mode) that the device's task must finish."""

    started: float
    #: The failure to handle, or ``None``: make the poll again on the full path.
    error: Exception | None


class _Schedule:
    """The due polls of every device in one heap, behind one loop timer.

    A task sleeping per device costs a timer and a wake-up per poll; here one timer
    wakes when the earliest poll is due, a few milliseconds late on purpose
    (``coalesce_s``, below the late-poll threshold) so polls due close together start
    in the same wake-up and their datagrams leave in one burst. A device in lane mode
    is polled by ``lane`` right from the timer, without waking its task.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        coalesce_s: float,
        lane: Callable[[_DeviceState, float], None],
    ) -> None:
        self._loop = loop
        self._coalesce_s = coalesce_s
        self._lane = lane
        self._heap: list[tuple[float, int, _DeviceState]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._closed = False

    def wait(self, state: _DeviceState, due: float) -> asyncio.Future[_HandBack | None]:
        """A future set when the device's poll is due (lane mode: when its task must act)."""
        wake: asyncio.Future[_HandBack | None] = self._loop.create_future()
        state.wake = wake
        self.push(state, due)
        return wake

    def push(self, state: _DeviceState, due: float) -> None:
        """Put the device's next poll (due at ``due``) on the schedule."""
        if self._closed:
            return  # an answer arriving while the collector stops
        heapq.heappush(self._heap, (due, next(self._seq), state))
        at = due + self._coalesce_s
        if at < self._timer_at:
            self._arm(at)

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        heap = self._heap
        now = self._loop.time()
        while heap and heap[0][0] <= now:
            due, _, state = heapq.heappop(heap)
            wake = state.wake
            if wake is None or wake.done():
                continue
            if not state.lane:
                wake.set_result(None)
                continue
            try:
                self._lane(state, due)
            except Exception as exc:  # noqa: BLE001 - a bug: the device's task takes over
                wake.set_result(_HandBack(now, exc))
        if heap:
            self._arm(heap[0][0] + self._coalesce_s)

    def close(self) -> None:
        """Stop the timer (the collector is stopping)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf


class _Pool:
    """At most ``size`` polls at once: :class:`asyncio.Semaphore` without its per-call cost.

    Taking a free slot is a decrement (no coroutine, no lock object); only a full pool
    hands out a future to wait on, and a released slot goes to the longest waiter.
    """

    __slots__ = ("_free", "_waiters")

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def try_take(self) -> bool:
        """Take a free slot if there is one (never waits)."""
        if self._free > 0:
            self._free -= 1
            return True
        return False

    def take(self) -> asyncio.Future[None] | None:
        """``None`` if a slot was taken, else a future that completes with a slot."""
        if self._free > 0:
            self._free -= 1
            return None
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    def give(self) -> None:
        """Return a slot (to the longest waiter still waiting, if any)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


def _observe_many(child: Any, values: list[float]) -> None:
    """``child.observe(v)`` for every value, with one lock round per bucket, not per value.

    prometheus_client offers no batch observe; its histogram child keeps per-bucket
    counters and a sum, which are added to directly when present (checked against
    ``observe`` in the tests), else each value is observed.
    """
    bounds = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    total = getattr(child, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values:
            child.observe(value)
        return
    counts = [0] * len(bounds)
    for value in values:
        # observe() counts a value in the first bucket whose bound is >= it; the last is +Inf.
        counts[bisect.bisect_left(bounds, value)] += 1
    for i, count in enumerate(counts):
        if count:
            buckets[i].inc(count)
    total.inc(math.fsum(values))


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
    _dispatcher: UdpDispatcher | None = field(default=None, repr=False)
    _engine: Any = field(default=None, repr=False)
    _schedule: _Schedule | None = field(default=None, repr=False)
    _healthy: _Pool | None = field(default=None, repr=False)
    _ctx: CollectorContext | None = field(default=None, repr=False)
    #: Devices with polls not yet in the Prometheus counter, and poll latencies likewise.
    _unpublished: list[_DeviceState] = field(default_factory=list, repr=False)
    _latencies: list[float] = field(default_factory=list, repr=False)

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

    def _session(
        self, state: _DeviceState, community: SecretStr | None, v3: V3Credentials | None
    ) -> Session:
        d = state.options
        return make_session(
            d.host,
            d.port,
            community=community,
            v3=v3,
            timeout_s=state.timeout_s,
            retries=state.retries,
            dispatcher=self._dispatcher,
            engine=self._engine,
            label=f"{d.name} ({d.host}:{d.port})",
        )

    async def run(self, ctx: CollectorContext) -> None:
        """Poll every device until cancelled."""
        o = self.options
        loop = asyncio.get_running_loop()
        if o.engine == "auto":
            self._dispatcher = UdpDispatcher()
            await self._dispatcher.open()
        else:
            self._engine = new_engine()
        healthy = self._healthy = _Pool(o.max_concurrent)
        failing = _Pool(o.max_concurrent_failing)
        self._ctx = ctx
        # Polls due within this of each other start in one loop wake-up (and their answers
        # come back together): at most 40 % of the smallest late-poll threshold, so
        # coalescing alone never makes a poll late, and below the default jitter (10 % of
        # the interval, where the threshold is min(0.5 s, 10 %)).
        coalesce_s = _MAX_COALESCE_S
        try:
            for d in o.devices:
                community, v3 = self._credentials(d)
                interval = float(_knob(d, o.defaults, "interval_s"))
                jitter = _knob(d, o.defaults, "jitter_s")
                coalesce_s = min(coalesce_s, min(0.5, 0.1 * interval) * 0.4)
                state = self.states[d.name] = _DeviceState(
                    options=d,
                    session=None,  # type: ignore[arg-type] # set just below
                    interval_s=interval,
                    jitter_s=interval * 0.1 if jitter is None else float(jitter),
                    backoff_max_s=float(_knob(d, o.defaults, "backoff_max_s")),
                    max_repetitions=int(_knob(d, o.defaults, "max_repetitions")),
                    bulk=bool(_knob(d, o.defaults, "bulk")),
                    max_oids_per_pdu=int(_knob(d, o.defaults, "max_oids_per_pdu")),
                    timeout_s=float(_knob(d, o.defaults, "timeout_s")),
                    retries=int(_knob(d, o.defaults, "retries")),
                    community=community,
                    v3=v3,
                )
                state.session = self._session(state, community, v3)
            self._schedule = _Schedule(loop, coalesce_s, self._lane_poll)
            async with asyncio.TaskGroup() as group:
                group.create_task(self._flusher(ctx), name=f"{self.name}:flush")
                for state in self.states.values():
                    group.create_task(
                        self._device_loop(ctx, state, healthy, failing),
                        name=f"{self.name}:{state.options.name}",
                    )
        finally:
            if self._schedule is not None:
                self._schedule.close()
            self._publish_metrics(ctx)
            if self.buffer:
                with contextlib.suppress(Exception):
                    await asyncio.shield(ctx.emit(self.buffer.take()))
            if self._dispatcher is not None:
                self._dispatcher.close()
            if self._engine is not None:
                close_engine(self._engine)

    async def _flusher(self, ctx: CollectorContext) -> None:
        while True:
            await asyncio.sleep(self.options.flush_s)
            self._publish_metrics(ctx)
            if self.buffer:
                await ctx.emit(self.buffer.take())

    def _publish_metrics(self, ctx: CollectorContext) -> None:
        """Poll counts and latencies since the last flush into Prometheus, in one go."""
        for state in self._unpublished:
            state.pending_metrics = False
            if state.polls_counter is None:
                state.polls_counter = metrics.POLLS.labels(ctx.name, state.options.name)
            state.polls_counter.inc(state.polls - state.polls_published)
            state.polls_published = state.polls
        self._unpublished.clear()
        if self._latencies:
            latencies, self._latencies = self._latencies, []
            _observe_many(metrics.POLL_SECONDS.labels(ctx.name), latencies)

    async def _device_loop(
        self,
        ctx: CollectorContext,
        state: _DeviceState,
        healthy: _Pool,
        failing: _Pool,
    ) -> None:
        loop = asyncio.get_running_loop()
        schedule = self._schedule
        assert schedule is not None
        interval = state.interval_s
        # Spread devices over the interval so polls do not arrive in one burst.
        state.slot = loop.time() + (0.0 if self.first_poll_now else random.uniform(0, interval))
        state.late_after = min(0.5, 0.1 * interval)
        while True:
            due = state.slot + (random.uniform(0, state.jitter_s) if state.jitter_s else 0.0)
            handed: _HandBack | None = None
            if self._lane_ok(state):
                # Lane mode: the schedule makes this device's good polls itself; this task
                # only wakes for a poll that failed or needs the full path.
                state.lane = True
                try:
                    handed = await schedule.wait(state, due)
                finally:
                    state.lane = False
            elif due > loop.time():
                await schedule.wait(state, due)
            if handed is not None:
                started = handed.started  # counted (polls, late) when the schedule started it
            else:
                started = loop.time()
                self._count_start(state, started, due)
            pool = failing if state.failing else healthy
            waiter = pool.take()
            if waiter is not None:
                try:
                    await waiter
                except asyncio.CancelledError:
                    if waiter.done() and not waiter.cancelled():
                        pool.give()  # handed a slot just as the collector stopped
                    raise
            try:
                poller = state.poller
                try:
                    if handed is not None and handed.error is not None:
                        raise handed.error
                    if poller is not None and (poller.bulk_fallback or not poller.plan.columns):
                        # No coroutine frame between this loop and the poller.
                        result: PollResult | None = await poller.poll(self.buffer)
                    else:
                        result = await self._poll(ctx, state)
                except Exception as exc:  # noqa: BLE001 - one device's trouble must not stop the others
                    result = await self._failed(ctx, state, exc)
                ok = result is not None
                if result is not None:
                    self._succeeded(ctx, state, result)
            finally:
                pool.give()
            state.finished += 1
            now = loop.time()
            if ok:
                self._latencies.append(now - started)
            state.slot, state.backoff_s = next_poll_slot(
                state.slot,
                now,
                interval,
                ok=ok,
                backoff_s=state.backoff_s,
                backoff_max_s=state.backoff_max_s,
            )

    def _count_start(self, state: _DeviceState, started: float, due: float) -> None:
        """Count a poll that starts now (late if over ``late_after``); metrics at next flush."""
        if started - due > state.late_after:
            state.late += 1
        if self.record_starts:
            state.starts.append(started)
        state.polls += 1
        if not state.pending_metrics:
            state.pending_metrics = True
            self._unpublished.append(state)

    def _lane_ok(self, state: _DeviceState) -> bool:
        """Can the schedule poll this device itself (healthy, v2c, a plan of one GET PDU)?

        Most PDUs, UPSes and meters are such devices; the poller's private fast-path
        attributes tell (this module and the poller are one package).
        """
        poller = state.poller
        return (
            poller is not None
            and not state.failing
            and type(state.session) is V2cSession
            and state.session.resolved  # a host name is resolved by the task's poll first
            and poller._gets_only is not None
            and len(poller._chunks) == 1
        )

    def _lane_poll(self, state: _DeviceState, due: float) -> None:
        """Start a lane-mode poll from the schedule's timer: no task, no future.

        The request goes out with a callback (:meth:`_lane_answer`); the device's task
        sleeps on until a poll needs it (an error, an agent that wants smaller PDUs).
        """
        assert state.wake is not None
        now = asyncio.get_running_loop().time()
        self._count_start(state, now, due)
        session = state.session
        poller = state.poller
        healthy = self._healthy
        assert healthy is not None
        # Only the device's task changes its poller, session or health, and it is not
        # running while the device is in lane mode: _lane_ok held when it entered.
        if poller is None or not isinstance(session, V2cSession) or not healthy.try_take():
            state.wake.set_result(_HandBack(now, None))  # the task waits for a slot
            return
        chunk = poller._chunks[0]
        request = state.lane_request
        if request is None or request[0] is not session or request[1] is not chunk:
            request = state.lane_request = (session, chunk, session.template(ber.GET, chunk))
        session.dispatcher.request_then(
            request[2],
            session.addr,
            session.timeout_s,
            session.retries,
            functools.partial(self._lane_answer, state, session, chunk, now),
        )

    def _lane_answer(
        self,
        state: _DeviceState,
        session: V2cSession,
        chunk: list[bytes],
        started: float,
        outcome: Any,
    ) -> None:
        """The answer (or timeout) of a lane-mode poll: readings, bookkeeping, next slot."""
        healthy, schedule, ctx = self._healthy, self._schedule, self._ctx
        assert healthy is not None and schedule is not None and ctx is not None
        healthy.give()
        if state.wake is None or state.wake.done():
            return  # the collector is stopping
        poller = state.poller
        assert poller is not None and poller._gets_only is not None
        try:
            values = dict(session.get_answer(chunk, outcome))
            # What poller.poll() runs for a GET-only plan whose one PDU was answered.
            result = poller._get_readings(
                values,
                poller._gets_only,
                int(time.time() * 1_000_000),
                self.buffer,
            )
        except SnmpAgentError:
            # tooBig, genErr: the poller's full path adapts the PDUs.
            state.wake.set_result(_HandBack(started, None))
            return
        except Exception as exc:  # noqa: BLE001 - the device's task logs and backs off
            state.wake.set_result(_HandBack(started, exc))
            return
        state.finished += 1
        state.lane_polls += 1
        now = asyncio.get_running_loop().time()
        self._latencies.append(now - started)
        if result.bad_values or result.bad_index:
            self._succeeded(ctx, state, result)
        state.slot, state.backoff_s = next_poll_slot(
            state.slot,
            now,
            state.interval_s,
            ok=True,
            backoff_s=state.backoff_s,
            backoff_max_s=state.backoff_max_s,
        )
        jitter = random.uniform(0, state.jitter_s) if state.jitter_s else 0.0
        schedule.push(state, state.slot + jitter)

    async def _failed(
        self, ctx: CollectorContext, state: _DeviceState, exc: Exception
    ) -> PollResult | None:
        """A poll failed: count it and log it once per run of failures - or try a rotated secret.

        If a rotated secret explains the failure, the poll is made again with it.

        Returns:
            The result of that second poll, or ``None`` (the poll failed).
        """
        device = state.options.name
        if not isinstance(exc, SnmpError):
            # A bug or an answer nobody foresaw: keep the traceback, treat as a failed poll.
            _log.exception("poll crashed", collector=ctx.name, device=device, exc_info=exc)
            exc = SnmpError(f"internal error: {type(exc).__name__}")
        if exc.reason in _REREAD_REASONS and self._reread_secrets(ctx, state):
            # The operator rotated the secret: try the new one now rather than after a
            # backoff that may have grown to minutes.
            try:
                return await self._poll(ctx, state)
            except Exception as again:  # noqa: BLE001 - as above
                if isinstance(again, SnmpError):
                    exc = again
        metrics.POLL_FAILURES.labels(ctx.name, device, exc.reason).inc()
        state.mark_failed(
            _log, collector=ctx.name, device=device, reason=exc.reason, error=str(exc)
        )
        return None

    def _succeeded(self, ctx: CollectorContext, state: _DeviceState, result: PollResult) -> None:
        if state.failing and state.mark_recovered(
            _log, collector=ctx.name, device=state.options.name
        ):
            state.backoff_s = 0.0
        if result.bad_values or result.bad_index:
            metrics.READINGS_REJECTED.labels(ctx.name, "snmp_bad_value").inc(
                result.bad_values + result.bad_index
            )

    async def _poll(self, ctx: CollectorContext, state: _DeviceState) -> PollResult:
        """One poll of the device (its plan resolved first if need be).

        Raises:
            SnmpError: and anything a bug raises; :meth:`_failed` sorts them out.
        """
        poller = state.poller
        if poller is None:
            device = state.options.name
            plan = await resolve_plan(
                state.session,
                self.profiles,
                state.options.profile,
                state.options.quirks,
                state.max_oids_per_pdu,
            )
            poller = state.poller = Poller(
                device,
                state.session,
                plan,
                max_repetitions=state.max_repetitions,
                bulk=state.bulk,
            )
            _log.info("device profile", collector=ctx.name, device=device, profile=plan.describe())
        if poller.bulk_fallback:
            return await poller.poll(self.buffer)
        result = await poller.poll(self.buffer)
        if poller.bulk_fallback:
            _log.warning(
                "GETBULK failed, walking with GETNEXT from now on",
                collector=ctx.name,
                device=state.options.name,
            )
        return result

    def _reread_secrets(self, ctx: CollectorContext, state: _DeviceState) -> bool:
        """After a failure that a rotated secret explains: read the device's secrets again.

        At most once per backoff period (a failing device polls about that often anyway,
        and a secret file is not to be read per poll). If they changed, the device gets a
        new session: a new SNMPv3 session discovers the engine again and localizes the
        new keys; nothing of the old user's keys is reused.

        Returns:
            Whether the secrets changed (and the session was replaced).
        """
        d = state.options
        if d.community_secret is None and (
            d.v3 is None or (d.v3.auth_key_secret is None and d.v3.priv_key_secret is None)
        ):
            return False  # nothing read from a file: nothing can have changed
        now = asyncio.get_running_loop().time()
        # 0.9: failed polls come once per backoff period, give or take the loop's timing.
        if now - state.secrets_read_at < 0.9 * max(state.interval_s, state.backoff_s):
            return False
        state.secrets_read_at = now
        try:
            community, v3 = self._credentials(d)
        except ConfigError:
            return False  # mid-rotation (file being replaced): try again next period
        if community == state.community and v3 == state.v3:
            return False
        state.session.close()
        state.community, state.v3 = community, v3
        state.session = self._session(state, community, v3)
        if state.poller is not None:
            state.poller.session = state.session
        _log.info(
            "device credentials changed, new session",
            collector=ctx.name,
            device=d.name,
            secrets=sorted(self._secret_names(d)),
        )
        return True

    @staticmethod
    def _secret_names(d: DeviceOptions) -> set[str]:
        names = {d.community_secret} if d.community_secret else set()
        if d.v3 is not None:
            names |= {n for n in (d.v3.auth_key_secret, d.v3.priv_key_secret) if n}
        return names


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
