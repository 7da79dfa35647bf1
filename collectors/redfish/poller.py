"""Polling one device: discover when needed, GET the plan's resources, track failing/recovered."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import polars as pl

from agent import metrics
from agent.logs import get_logger
from collectors.health import DeviceHealth
from collectors.redfish.client import RedfishClient
from collectors.redfish.discovery import discover
from collectors.redfish.errors import (
    RedfishAuthError,
    RedfishBadResponseError,
    RedfishError,
    RedfishNotFoundError,
    RedfishTransportError,
)
from collectors.redfish.plan import PROBE_SCHEMA, PlanEvaluator, PollPlan, PollResult
from collectors.redfish.profile import Profile, Tier

__all__ = ["DevicePoller"]

_log = get_logger("redfish")


class DevicePoller(DeviceHealth):
    """One device's plan and health; :meth:`poll` never raises for device errors."""

    def __init__(
        self,
        client: RedfishClient,
        profile: Profile,
        *,
        tiers: list[Tier] | None = None,
        rediscover_s: float = 3600.0,
        collector: str = "redfish",
    ) -> None:
        """Poll ``client``'s device with ``profile``."""
        self.client = client
        self.device = client.config.device
        self.profile = profile
        self.tiers = tiers
        self.rediscover_s = rediscover_s
        self.collector = collector
        self.plan: PollPlan | None = None
        self.discovered_at = 0.0
        self.discoveries = 0
        DeviceHealth.__init__(self)

    async def poll(self) -> PollResult:
        """Read the device once; errors are returned (and logged on state changes)."""
        started = time.monotonic()
        metrics.POLLS.labels(self.collector, self.device).inc()
        errors: list[Exception] = []
        frame = pl.DataFrame(schema=PROBE_SCHEMA)
        try:
            plan = await self._plan(errors)
            evaluator = PlanEvaluator(self.device)
            ts = datetime.now(UTC)
            for fetch in plan.fetches:
                try:
                    doc = await self.client.get_json(fetch.path)
                except (RedfishTransportError, RedfishAuthError):
                    raise  # the BMC is unreachable: do not queue more timeouts behind this one
                except RedfishNotFoundError as exc:
                    errors.append(exc)
                    self.plan = None  # the tree changed: walk it again next poll
                    continue
                except RedfishError as exc:
                    errors.append(exc)  # this resource only; the others are still read
                    continue
                evaluator.take(fetch, doc)
            errors.extend(RedfishBadResponseError(self.device, "", p) for p in evaluator.problems)
            frame = evaluator.finish(plan, ts)
        except RedfishError as exc:
            errors.append(exc)
        metrics.POLL_SECONDS.labels(self.collector).observe(time.monotonic() - started)
        self._health(errors)
        return PollResult(frame, errors)

    async def _plan(self, errors: list[Exception]) -> PollPlan:
        now = time.monotonic()
        if self.plan is None or now - self.discovered_at > self.rediscover_s:
            self.plan = await discover(self.client.get_json, self.profile, self.tiers)
            errors.extend(self.plan.problems)
            self.discovered_at = now
            self.discoveries += 1
            _log.info(
                "discovered",
                device=self.device,
                resources_per_poll=len(self.plan.fetches),
                points=len(self.plan.points()),
                discovery=self.discoveries,
            )
        return self.plan

    def _health(self, errors: list[Exception]) -> None:
        # A vanished resource (404) is a change of the tree, not a failing device.
        failures = [e for e in errors if not isinstance(e, RedfishNotFoundError)]
        for exc in errors:
            if isinstance(exc, RedfishNotFoundError):
                _log.info("resource gone; re-discovering", device=self.device, error=str(exc))
        if failures:
            reason = getattr(failures[0], "reason", "error")
            metrics.POLL_FAILURES.labels(self.collector, self.device, reason).inc()
            self.mark_failed(
                _log,
                collector=self.collector,
                device=self.device,
                reason=reason,
                error=str(failures[0]),
                errors=len(failures),
            )
        else:
            self.mark_recovered(_log, collector=self.collector, device=self.device)
