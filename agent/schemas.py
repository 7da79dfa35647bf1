"""Frames that cross between the aggregator, sinks, rules and reports.

These are contracts: the aggregator produces them, the interval store keeps
them, the InfluxDB/MQTT sinks publish them, the rules engine and the reports
read them. Columns may be added; none is renamed or retyped without a
migration note in ``docs/``.
"""

from __future__ import annotations

import enum

import polars as pl

__all__ = [
    "FINDING_SCHEMA",
    "INTERVAL_SCHEMA",
    "INTERVAL_STORE_SCHEMA",
    "KPI_SCHEMA",
    "SILENCE_SCHEMA",
    "IntervalFlag",
    "KpiStatus",
    "PeriodKind",
]


class IntervalFlag(enum.IntFlag):
    """Flags carried by every interval row (a bit set)."""

    NONE = 0
    #: Energy spread linearly over a gap between two valid register reads.
    INTERPOLATED = 1
    #: Part of the interval had no valid data (coverage < 1).
    GAP = 2
    #: A register wrap was corrected inside the interval.
    WRAP = 4
    #: A register reset (decrease that is not a wrap) happened; counted from the new base.
    RESET = 8
    #: At least one reading in or around the interval was rejected as implausible.
    REJECTED = 16
    #: Energy integrated from power readings (no register): an estimate.
    ESTIMATED = 32
    #: Built from imported historical readings.
    IMPORTED = 64


class PeriodKind(enum.StrEnum):
    """The windows KPIs are computed for."""

    INTERVAL = "interval"
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"
    #: Trailing twelve calendar months ending with the labelled month (the annual PUE).
    TTM = "ttm"


class KpiStatus(enum.StrEnum):
    """Whether a KPI value is usable."""

    OK = "ok"
    INSUFFICIENT_DATA = "insufficient_data"


#: Per-meter interval energy (the local interval store, partitioned by month).
INTERVAL_SCHEMA = pl.Schema(
    {
        "meter": pl.String(),
        "interval_start": pl.Datetime("us", "UTC"),
        "interval_end": pl.Datetime("us", "UTC"),
        "energy_kwh": pl.Float64(),
        "coverage": pl.Float64(),
        "flags": pl.UInt16(),
        "method": pl.String(),  # "register" | "power_integration"
    }
)

#: What the aggregator and the store keep: :data:`INTERVAL_SCHEMA` plus how many readings
#: (or register steps) were rejected as implausible in the interval. ``INTERVAL_SCHEMA``
#: itself is a shared contract and stays as it is; readers select its columns.
INTERVAL_STORE_SCHEMA = pl.Schema({**INTERVAL_SCHEMA, "rejected_readings": pl.UInt32()})

#: Silent periods: a meter with no reading for at least the aggregator's ``silence_s``
#: (default 15 minutes) and longer than 1.5 x its usual spacing (``agent.energy.silence``).
#: ``start``/``end`` are the readings around the silence; ``period`` is the site-local month
#: of ``start`` (how the store partitions them).
SILENCE_SCHEMA = pl.Schema(
    {
        "meter": pl.String(),
        "period": pl.String(),
        "start": pl.Datetime("us", "UTC"),
        "end": pl.Datetime("us", "UTC"),
        "imported": pl.Boolean(),
    }
)

#: Site KPIs in long form: one row per (period, metric). ``value`` is null when the
#: status is ``insufficient_data``; ``category`` is the PUE measurement category for
#: PUE-type metrics (null otherwise).
KPI_SCHEMA = pl.Schema(
    {
        "site": pl.String(),
        "period_kind": pl.String(),
        "period": pl.String(),  # label in site-local time: "2026-10", "2026-10-05", ...
        "period_start": pl.Datetime("us", "UTC"),
        "period_end": pl.Datetime("us", "UTC"),
        "metric": pl.String(),  # pue, ref, ref_metered, ref_documentary, cue, ppue_cooling, ...
        "value": pl.Float64(),
        "unit": pl.String(),
        "status": pl.String(),
        "coverage": pl.Float64(),
        "category": pl.Int8(),
    }
)

#: Rule findings (rules engine -> sinks, reports). One row per (rule, period).
FINDING_SCHEMA = pl.Schema(
    {
        "site": pl.String(),
        "period": pl.String(),  # evaluated period label, site-local ("2026-10")
        "policy_id": pl.String(),  # e.g. "shanxi-2024-35"
        "rule_id": pl.String(),  # e.g. "shanxi-2024-35-4"
        "document": pl.String(),  # document number, e.g. "晋政办发〔2024〕35号"
        "clause": pl.String(),  # cited clause wording
        "jurisdiction": pl.String(),
        "policy_status": pl.String(),  # in_force | expired | not_yet | draft
        "result": pl.String(),  # eligible | not_eligible | insufficient_data | not_applicable
        "advisory": pl.Boolean(),  # true when the policy is a draft
        "metric": pl.String(),
        "window": pl.String(),  # e.g. "ttm", "month"
        "measured_value": pl.Float64(),
        "comparator": pl.String(),  # "<", "<=", ">", ">="
        "threshold": pl.Float64(),
        "coverage": pl.Float64(),
        "category": pl.Int8(),
        "facts_used": pl.String(),  # JSON object of declared facts relied on
        "benefit_cny": pl.Float64(),
        "explanation": pl.String(),
        "rule_kind": pl.String(),  # threshold | report | declaration (rules/pack.py)
        "first_met_period": pl.String(),  # first period the test held ("首次" rules), else null
        "warning": pl.String(),  # null | "margin" | "trend" | "margin,trend" (early warning)
        "warning_detail": pl.String(),  # the early warning in words, null when none
    }
)
