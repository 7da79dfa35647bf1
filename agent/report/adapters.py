"""The report's links to the KPI engine and the rules engine.

The report and ``verify`` must compute KPIs "with the same rules as the agent",
so both call :func:`compute_kpis`, which is ``agent.kpi.compute_kpis`` itself;
the engine's name is recorded in ``kpis.json`` so an auditor knows which code
produced (and re-produces) the figures. :func:`evaluate_findings` runs the rules
engine (``rules.evaluate``) on the same KPI frame the bundle carries.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

# Re-exported, not wrapped: the report and verify call the agent's engine itself.
from agent.kpi import compute_kpis
from agent.schemas import FINDING_SCHEMA
from agent.site import Site

__all__ = ["KPI_ENGINE", "compute_kpis", "evaluate_findings"]

#: Name recorded in ``kpis.json``; ``verify`` refuses a bundle that names another engine.
KPI_ENGINE = "agent.kpi.compute_kpis"


def evaluate_findings(
    kpis: pl.DataFrame, site: Site, *, month: str, policies_dir: Path | None = None
) -> tuple[pl.DataFrame, str]:
    """Rule findings for ``month`` from ``rules.engine.evaluate`` and the packs that applied.

    Args:
        kpis: KPI history (KPI_SCHEMA) up to ``month``: month and TTM rows of earlier
            months let the engine decide "first time below" rules.
        site: The site model (facts, category).
        month: The evaluated month.
        policies_dir: The operator's policy packs (``None``: built-in packs only).

    Returns:
        The findings (FINDING_SCHEMA) and a description of the packs used.
    """
    from rules import evaluate, load_packs  # noqa: PLC0415 - only when findings are needed

    packs = load_packs(policies_dir)
    findings = evaluate(
        packs, kpis, site.facts, site=site, period=month, category=site.pue_category
    )
    described = ", ".join(p.id for p in packs) or "none"
    return findings.select(FINDING_SCHEMA.names()), f"rules.engine.evaluate ({described})"
