"""Shared fixtures: one signed bundle of a simulated multi-meter month, built once."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.keys import SigningKey
from agent.periods import month_bounds
from agent.report.bundle import BundleResult, ReportRequest, build_bundle
from tests.report.simdata import (
    drop_days,
    history_intervals,
    month_intervals,
    sim_site,
    with_events,
)

MONTH = "2026-10"
JOURNAL_SUMMARY = {
    "available": True,
    "first_seq": 11,
    "first_prev_hash": "00" * 32,
    "first_hash": "ab" * 32,
    "last_seq": 4470,
    "last_hash": "cd" * 32,
    "batch_count": 4460,
    "head_seq": 4500,
    "head_hash": "ef" * 32,
}


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    return SigningKey(Ed25519PrivateKey.generate(), "test")


@pytest.fixture(scope="session")
def good_bundle(tmp_path_factory: pytest.TempPathFactory, signing_key: SigningKey) -> BundleResult:
    sim, site = sim_site()
    month = with_events(month_intervals(sim, site, MONTH), MONTH, site)
    history = history_intervals(sim, site, MONTH)
    out = tmp_path_factory.mktemp("bundle")
    request = ReportRequest(
        site=site,
        month=MONTH,
        intervals=month.lazy(),
        history=history.lazy(),
        journal=JOURNAL_SUMMARY,
    )
    return build_bundle(request, signing_key, out)


@pytest.fixture(scope="session")
def sparse_bundle(
    tmp_path_factory: pytest.TempPathFactory, signing_key: SigningKey
) -> BundleResult:
    """A month whose IT meters miss five days: coverage 84 % < 95 %."""
    sim, site = sim_site()
    start, _ = month_bounds(MONTH, site.timezone)
    month = drop_days(month_intervals(sim, site, MONTH), "pdu-", start + timedelta(days=9), 5)
    history = history_intervals(sim, site, MONTH)
    out = tmp_path_factory.mktemp("sparse")
    request = ReportRequest(site=site, month=MONTH, intervals=month.lazy(), history=history.lazy())
    return build_bundle(request, signing_key, out, ("zh",), make_zip=False)


@pytest.fixture
def bundle_copy(good_bundle: BundleResult, tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / good_bundle.directory.name
    shutil.copytree(good_bundle.directory, target)
    yield target


def kpi_value(kpis: pl.DataFrame, kind: str, metric: str) -> float | None:
    row = kpis.filter((pl.col("period_kind") == kind) & (pl.col("metric") == metric))
    return row["value"][0] if row.height else None
