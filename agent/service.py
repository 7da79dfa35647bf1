"""Running under systemd: sd_notify (READY, WATCHDOG, STOPPING, STATUS) and SIGHUP reload.

:class:`AgentService` owns and runs one :class:`~agent.pipeline.Agent`
(:meth:`AgentService.serve`); the pipeline knows it only as its run hooks. It

* tells systemd ``READY=1`` once collectors run (and the HTTP API, if enabled,
  is bound), pings ``WATCHDOG=1`` at half of ``$WATCHDOG_USEC`` until the agent
  has shut down, and says ``STOPPING=1`` when asked to stop;
* on SIGHUP re-reads the config file and starts/stops the collectors whose
  entries were added, removed or changed, leaving the others polling;
* starts and stops the HTTP API (:mod:`agent.api.server`).

sd_notify is a datagram on a Unix socket; it is written here directly (a few
lines) rather than through a dependency. Without ``$NOTIFY_SOCKET`` every
notification is a no-op, so the same code runs under systemd, in a terminal
and in tests.

A reload never loses data: a removed collector's task is cancelled like at
shutdown, and every batch it handed over before that is already queued for the
journal writer (an emit is acknowledged only once fsynced; a cancelled emit was
never acknowledged). Changes outside ``[[collectors]]`` (sinks, site model,
journal, API address) need a restart; the reload says which.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from agent.api.server import ApiServer
from agent.logs import get_logger
from agent.pipeline import Agent
from agent.plugins import Collector, build_collector
from agent.settings import AgentSettings, CollectorEntry, ConfigError, load_settings

__all__ = [
    "AgentService",
    "ReloadPlan",
    "SdNotifier",
    "StateDirLockedError",
    "collector_entries",
    "lock_state_dir",
    "plan_reload",
    "watchdog_interval",
]

_log = get_logger("service")

#: Settings whose change a SIGHUP cannot apply to a running agent.
_RESTART_FIELDS = ("state_dir", "site_file", "site", "journal", "sinks", "api", "secrets_dir")


#: The lock file in the state directory held (``flock``) by the one running agent.
STATE_LOCK_NAME = "agent.lock"


class StateDirLockedError(ConfigError):
    """Another agent runs on this state directory."""


def lock_state_dir(state_dir: Path) -> IO[str]:
    """Take the state directory for this process: one agent per state dir.

    Two agents on one state dir both collected and wrote the interval store twice
    (issue 22). The lock is an ``flock`` on ``<state_dir>/agent.lock``, released by the
    kernel when the process exits however it exits (SIGKILL included), so a crash never
    leaves a stale lock. The file holds the holder's pid, for the message only.

    Args:
        state_dir: The agent's state directory (created if missing).

    Returns:
        The open lock file; keep it open for the life of the agent.

    Raises:
        StateDirLockedError: naming the directory and the running agent's pid.
    """
    path = state_dir / STATE_LOCK_NAME
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle = path.open("a+", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot open the state lock {path}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise StateDirLockedError(
            f"state directory {state_dir} is in use by another pue-agent (pid {holder}, "
            f"lock {path}): stop it first, or give this one its own state_dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


class SdNotifier:
    """Sends sd_notify messages to ``$NOTIFY_SOCKET`` (no-op when it is unset)."""

    def __init__(self, address: str | None = None) -> None:
        """Use ``address`` (default: ``$NOTIFY_SOCKET``); ``@name`` is an abstract socket."""
        raw = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if raw.startswith("@"):
            self.address = "\0" + raw[1:]
        elif raw.startswith("/"):
            self.address = raw

    @property
    def enabled(self) -> bool:
        """Whether a notification socket is configured."""
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines as one datagram; returns whether it was sent.

        A failure to notify is logged, never raised: systemd going away must not
        take the agent's data path down with it.
        """
        if self.address is None or not assignments:
            return False
        message = "\n".join(assignments).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall(message)
        except OSError as exc:
            _log.warning("sd_notify failed", error=str(exc))
            return False
        return True


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings (half of ``$WATCHDOG_USEC``), or ``None`` if off.

    ``$WATCHDOG_PID``, when set, must name this process (systemd sets it so a
    child does not ping on its parent's behalf).
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000


def collector_entries(settings: AgentSettings) -> dict[str, CollectorEntry]:
    """Enabled collector entries by the name the pipeline gives them."""
    return {
        entry.name or f"{entry.kind}-{i}": entry
        for i, entry in enumerate(settings.collectors)
        if entry.enabled
    }


def _fingerprint(entry: CollectorEntry) -> tuple[str, str]:
    return entry.kind, repr(sorted(entry.options().items()))


@dataclass(frozen=True)
class ReloadPlan:
    """What a reload does to the collectors (a changed entry is stopped and started)."""

    start: dict[str, CollectorEntry]
    stop: list[str]
    keep: list[str]
    needs_restart: list[str]

    @property
    def empty(self) -> bool:
        """Nothing to start or stop."""
        return not self.start and not self.stop


def plan_reload(old: AgentSettings, new: AgentSettings) -> ReloadPlan:
    """Compare collector entries by name and options; list settings that need a restart."""
    before, after = collector_entries(old), collector_entries(new)
    stop = [name for name in before if name not in after]
    start: dict[str, CollectorEntry] = {}
    keep: list[str] = []
    for name, entry in after.items():
        if name not in before:
            start[name] = entry
        elif _fingerprint(before[name]) != _fingerprint(entry):
            stop.append(name)
            start[name] = entry
        else:
            keep.append(name)
    needs_restart = [
        name for name in _RESTART_FIELDS if _dump(getattr(old, name)) != _dump(getattr(new, name))
    ]
    return ReloadPlan(start=start, stop=stop, keep=keep, needs_restart=needs_restart)


def _dump(value: Any) -> Any:
    if isinstance(value, list):
        return [_dump(v) for v in value]
    dump = getattr(value, "model_dump", None)
    return dump() if callable(dump) else value


@dataclass
class AgentService:
    """systemd integration, SIGHUP reload and the HTTP API around one running :class:`Agent`."""

    agent: Agent
    install_signals: bool = True
    notifier: SdNotifier = field(default_factory=SdNotifier)
    api: ApiServer | None = field(default=None, init=False)
    reloads: int = field(default=0, init=False)
    #: True from READY=1 until the agent is asked to stop (``/readyz``).
    ready: bool = field(default=False, init=False)
    _watchdog: asyncio.Task[None] | None = field(default=None, init=False)
    _reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    _reload_tasks: set[asyncio.Task[ReloadPlan | None]] = field(default_factory=set, init=False)

    async def serve(self) -> None:
        """Run the agent with this service around it until it stops (``pue-agent run``)."""
        await self.agent.run(install_signals=self.install_signals, hooks=self)

    async def start(self) -> None:
        """Bind the HTTP API (if enabled) and start the watchdog; before the TaskGroup.

        Raises:
            ConfigError: if the API cannot start (bad TLS material, address in use).
        """
        if self.agent.settings.api.enabled:
            self.api = ApiServer(self.agent, service=self)
            await self.api.start()
        interval = watchdog_interval()
        if interval is not None and self.notifier.enabled:
            self._watchdog = asyncio.create_task(self._ping(interval), name="sd-watchdog")
        if self.install_signals:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.request_reload)

    async def run(self) -> None:
        """Inside the agent's TaskGroup: READY once running, STOPPING when asked to stop."""
        self.ready = True
        self.notifier.notify("READY=1", f"STATUS={self._status()}")
        _log.info("ready", api=self.api.url if self.api else None)
        await self.agent.stopping.wait()
        self.ready = False
        self.notifier.notify("STOPPING=1", "STATUS=stopping: flushing the journal queue")

    async def close(self) -> None:
        """Stop the API and the watchdog; after the agent has shut down."""
        if self.install_signals:
            with contextlib.suppress(RuntimeError, ValueError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for task in list(self._reload_tasks):
            await _cancel(task)
        if self.api is not None:
            await self.api.stop()
        if self._watchdog is not None:
            await _cancel(self._watchdog)

    # -- watchdog -----------------------------------------------------------------------------

    async def _ping(self, interval: float) -> None:
        # The ping comes from the event loop itself: if the loop is blocked (a hung
        # call on the loop thread), the pings stop and systemd restarts the agent.
        while True:
            self.notifier.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    # -- reload -------------------------------------------------------------------------------

    def request_reload(self) -> None:
        """SIGHUP handler: schedule a reload (reloads run one at a time)."""
        task = asyncio.get_running_loop().create_task(self.reload(), name="reload")
        self._reload_tasks.add(task)
        task.add_done_callback(self._reload_tasks.discard)

    async def reload(self) -> ReloadPlan | None:
        """Re-read the config file and apply collector changes; ``None`` if refused."""
        async with self._reload_lock:
            if self.agent.stopping.is_set():
                return None
            current = self.agent.settings
            if current.config_path is None:
                _log.warning("reload ignored: the agent was started without a config file")
                return None
            self.notifier.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
            try:
                plan, new_settings, built = await asyncio.to_thread(self._prepare, current)
            except ConfigError as exc:
                # The running configuration stays in force; the operator fixes the file.
                _log.error("reload refused; keeping the running configuration", error=str(exc))
                self.notifier.notify("READY=1", f"STATUS=reload refused: {_first_line(exc)}")
                return None
            for name in plan.stop:
                await self.agent.stop_collector(name)
            for collector in built:
                self.agent.start_collector(collector)
            self.agent.settings = current.model_copy(update={"collectors": new_settings.collectors})
            if self.api is not None:
                self.api.reload_tokens()
            self.reloads += 1
            _log.info(
                "reloaded",
                started=sorted(plan.start),
                stopped=sorted(plan.stop),
                kept=sorted(plan.keep),
                needs_restart=plan.needs_restart,
            )
            if plan.needs_restart:
                _log.warning("some changes need a restart to apply", settings=plan.needs_restart)
            self.notifier.notify("READY=1", f"STATUS={self._status()}")
            return plan

    def _prepare(self, current: AgentSettings) -> tuple[ReloadPlan, AgentSettings, list[Collector]]:
        # The state directory may have come from the command line; a reload keeps it.
        assert current.config_path is not None
        new = load_settings(current.config_path, state_dir=current.state_dir)
        plan = plan_reload(current, new)
        # Build every new collector before stopping anything: a bad entry refuses the
        # whole reload and the running collectors keep polling.
        built = [build_collector(e.kind, name, e.options(), new) for name, e in plan.start.items()]
        return plan, new, built

    def _status(self) -> str:
        running = len(self.agent.collector_tasks)
        api = f", API on {self.api.url}" if self.api else ""
        return f"running {running} collector(s), {len(self.agent.consumers)} sink(s){api}"


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
