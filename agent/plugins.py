"""What collectors and consumers (the aggregator, sinks) look like to the pipeline.

A *collector kind* is a module with a ``build(name, options, settings)``
function returning a :class:`Collector`; a *sink kind* likewise returns a
:class:`Consumer`. Kinds are listed here by import path and imported only when
configured, so an agent that polls SNMP alone never imports the MQTT stack.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import polars as pl

from agent.settings import AgentSettings, ConfigError

if TYPE_CHECKING:
    from agent.journal import AppendResult, Journal
    from agent.site import Site

__all__ = [
    "COLLECTOR_KINDS",
    "SINK_KINDS",
    "Collector",
    "CollectorContext",
    "Consumer",
    "ConsumerContext",
    "DerivedProgress",
    "Emit",
    "build_collector",
    "build_consumer",
]

#: Collector kinds by name -> "module" exposing ``build(name, options, settings) -> Collector``.
COLLECTOR_KINDS: dict[str, str] = {
    "sim": "collectors.sim",
    "snmp": "collectors.snmp",
    "mqtt": "collectors.mqtt",
    "redfish": "collectors.redfish",
    "modbus": "collectors.modbus",
    "bacnet": "collectors.bacnet",
    "nats": "collectors.nats",
}

#: Sink kinds by name -> "module" exposing ``build(name, options, settings) -> Consumer``.
SINK_KINDS: dict[str, str] = {
    "aggregator": "agent.aggregator",
    #: The aggregator's old kind name (it was a sink); ``check`` says so.
    "local_store": "agent.aggregator",
    "influxdb": "agent.sinks.influxdb",
    "mqtt": "agent.sinks.mqtt",
    "nats": "agent.sinks.nats",
    #: The site's KPI summary into the fleet's NATS KV bucket (docs/cluster.md, Fleet).
    "fleet": "agent.fleet",
}


class Emit(Protocol):
    """Hand a batch to the journal; returns once it is durable (``None`` if refused)."""

    async def __call__(self, batch: pl.DataFrame) -> AppendResult | None:
        """Validate, journal and acknowledge ``batch``."""
        ...


@dataclass
class CollectorContext:
    """What a running collector gets from the pipeline."""

    name: str
    settings: AgentSettings
    emit: Emit


@runtime_checkable
class Collector(Protocol):
    """A source of reading batches; :meth:`run` polls until cancelled."""

    name: str

    def describe(self) -> str:
        """One line for ``pue-agent check``: what this collector will poll."""
        ...

    async def run(self, ctx: CollectorContext) -> None:
        """Poll and emit until cancelled; handle device errors internally."""
        ...


@dataclass
class DerivedProgress:
    """How far a running aggregator's derived data (KPIs, findings) reflects the journal."""

    name: str
    #: Journal sequence up to which KPIs and findings were refreshed.
    derived_seq: int = 0
    finished: bool = False


@dataclass
class ConsumerContext:
    """What a running consumer gets: the journal, the site and the stop signal."""

    journal: Journal
    settings: AgentSettings
    site: Site | None
    #: Set once the agent is stopping *and* the journal writer has committed its last batch:
    #: a consumer that sees it and has read up to the head has consumed everything.
    stopping: asyncio.Event
    #: Set by the pipeline whenever new batches were committed, to wake idle consumers.
    new_data: asyncio.Event = field(default_factory=asyncio.Event)
    #: This agent's running aggregators by store root: the output sinks wait on them at
    #: shutdown so that what they send last reflects the aggregator's final refresh.
    aggregators: dict[Path, DerivedProgress] = field(default_factory=dict)


@runtime_checkable
class Consumer(Protocol):
    """Reads the journal from its own cursor (``name``) and writes somewhere."""

    name: str

    def describe(self) -> str:
        """One line for ``pue-agent check``."""
        ...

    async def run(self, ctx: ConsumerContext) -> None:
        """Consume from the cursor until ``ctx.stopping`` is set and it has caught up."""
        ...


def _factory(kinds: dict[str, str], kind: str, what: str) -> Callable[..., Any]:
    module_name = kinds.get(kind)
    if module_name is None:
        known = ", ".join(sorted(kinds))
        raise ConfigError(f"{what} kind {kind!r} is unknown (known: {known})")
    module = importlib.import_module(module_name)
    build: Callable[..., Any] = module.build
    return build


def build_collector(
    kind: str, name: str, options: dict[str, Any], settings: AgentSettings
) -> Collector:
    """Build a collector of ``kind``; option errors raise :class:`ConfigError`."""
    collector: Collector = _factory(COLLECTOR_KINDS, kind, "collector")(name, options, settings)
    return collector


def build_consumer(
    kind: str, name: str, options: dict[str, Any], settings: AgentSettings
) -> Consumer:
    """Build a sink of ``kind``; option errors raise :class:`ConfigError`."""
    consumer: Consumer = _factory(SINK_KINDS, kind, "sink")(name, options, settings)
    return consumer
