"""The aggregator: journal pages to interval energy, live KPIs and findings.

* :mod:`agent.aggregator.consumer` — the journal consumer (``[[sinks]]`` kind
  ``aggregator``; ``local_store`` is its old name) that feeds the interval-energy
  engine and writes the interval store;
* :mod:`agent.aggregator.refresh` — the live KPI and rule-finding refresh of the
  months a page touched;
* :mod:`agent.aggregator.feed` — what the output sinks read of it: new interval
  parts, changed KPI/finding rows, and the wait for its last refresh at shutdown.
"""

from agent.aggregator.consumer import (
    IMPORT_SOURCE_PREFIX,
    Aggregator,
    AggregatorOptions,
    CatchUp,
    build,
    catch_up,
    site_aggregator,
)
from agent.aggregator.feed import DerivedFeed, StoreRef, TableKind, locate_store
from agent.aggregator.refresh import LIVE_KINDS, KpiRefresher

__all__ = [
    "IMPORT_SOURCE_PREFIX",
    "LIVE_KINDS",
    "Aggregator",
    "AggregatorOptions",
    "CatchUp",
    "DerivedFeed",
    "KpiRefresher",
    "StoreRef",
    "TableKind",
    "build",
    "catch_up",
    "locate_store",
    "site_aggregator",
]
