"""``verify --journal``: the bundle's interval rows tie back to the raw, hash-chained readings."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.energy import interval_energy
from agent.journal import Journal
from agent.keys import SigningKey
from agent.periods import month_bounds
from agent.report.bundle import ReportRequest, build_bundle
from agent.report.sources import journal_summary
from agent.report.verify import verify_bundle
from tests.report.simdata import sim_site

MONTH = "2026-10"


def _journal(path: Path, *, tamper: bool = False) -> None:
    """Six hours of 5-minute simulator readings per batch, for the whole month."""
    sim, site = sim_site(pdus=2)
    start, end = month_bounds(MONTH, site.timezone)
    journal = Journal(path)
    t = start
    while t <= end:
        frames = []
        for _ in range(72):
            frames.append(sim.tick(t))
            t += timedelta(minutes=5)
        batch = pl.concat(frames)
        if tamper and t > start + timedelta(days=3) and t <= start + timedelta(days=3, hours=1):
            batch = batch.with_columns(
                pl.when(pl.col("device") == "pdu-001")
                & (pl.col("quantity") == "energy_kwh")
                .then(pl.col("value") + 5.0)
                .otherwise(pl.col("value"))
                .alias("value")
            )
        journal.append(batch, source="sim")
    journal.close()


@pytest.fixture(scope="module")
def journal_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("journal")
    path = root / "journal.sqlite"
    _journal(path)
    _, site = sim_site(pdus=2)
    start, end = month_bounds(MONTH, site.timezone)
    journal = Journal(path)
    readings = pl.concat([b.frame for b in journal.iter_batches(kinds=("readings",))])
    journal.close()
    intervals = interval_energy(readings.lazy(), site)
    request = ReportRequest(
        site=site,
        month=MONTH,
        intervals=intervals,
        journal=journal_summary(path, start, end),
        csv=False,
    )
    key = SigningKey(Ed25519PrivateKey.generate(), "test")
    result = build_bundle(request, key, root, ("en",), make_zip=False)
    return result.directory, path


def test_verify_with_journal_rederives_intervals(journal_bundle: tuple[Path, Path]) -> None:
    bundle, path = journal_bundle
    result = verify_bundle(bundle, journal=path)
    assert result.ok, [c.detail for c in result.checks]
    rederive = next(c for c in result.checks if c.name == "re-derive")
    assert (
        rederive.outcome in ("ok", "warning") and "re-derived from raw readings" in rederive.detail
    )
    journal_checks = [c.detail for c in result.checks if c.name == "journal"]
    assert any("carry the hashes" in d for d in journal_checks)


def test_verify_against_another_journal_fails(
    journal_bundle: tuple[Path, Path], tmp_path: Path
) -> None:
    bundle, _ = journal_bundle
    other = tmp_path / "other.sqlite"
    _journal(other, tamper=True)
    result = verify_bundle(bundle, journal=other)
    failure = result.first_failure
    assert failure is not None and failure.name == "journal"
    assert "differs from journal.json" in failure.detail
