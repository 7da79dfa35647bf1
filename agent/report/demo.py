"""The demo's sample monthly report: key, bundle and an independent verify, in one call."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from agent import keys
from agent.pipeline import load_site_for
from agent.report.bundle import HISTORY_MONTHS, ReportRequest, build_bundle
from agent.report.periods import month_bounds, shift_month
from agent.report.sources import journal_summary, month_intervals, read_history
from agent.report.verify import verify_bundle
from agent.settings import AgentSettings

__all__ = ["write_demo_report"]


def write_demo_report(settings: AgentSettings, month: str, *, console: Console) -> Path:
    """Sign a report bundle for ``month`` from the demo's store, verify it, return the zip.

    Raises:
        RuntimeError: if the freshly written bundle does not verify (a bug, never expected).
    """
    site = load_site_for(settings)
    assert site is not None, "the demo always has a site model"
    try:
        key = keys.load_signing_key(settings)
    except keys.SigningKeyError:
        key = keys.init_key(settings)
    start, end = month_bounds(month, site.timezone)
    history_start, _ = month_bounds(shift_month(month, -HISTORY_MONTHS), site.timezone)
    store = settings.state_dir / "store"
    out_dir = settings.state_dir / "reports"
    out_dir.mkdir(parents=True, exist_ok=True)
    with month_intervals(store, start, end) as intervals:
        request = ReportRequest(
            site=site,
            month=month,
            intervals=intervals,
            history=read_history(store, history_start, start, timezone=site.timezone),
            journal=journal_summary(settings.journal_path, start, end),
            csv=True,
        )
        result = build_bundle(request, key, out_dir, ("zh", "en"), overwrite=True)
    bundle = result.zip_path or result.directory
    # Verify as an auditor would: with the public key handed over as a file.
    public_file = out_dir / f"{site.id}-signing-key.pub.pem"
    public_file.write_text(keys.public_key_pem(key.public), encoding="utf-8")
    checked = verify_bundle(bundle, pubkey=public_file, journal=settings.journal_path)
    if not checked.ok:
        failure = checked.first_failure
        raise RuntimeError(f"sample report does not verify: {failure}")
    console.print(
        f"verified: {len(checked.checks)} checks passed (signature, hashes, KPIs re-computed, "
        f"intervals re-derived from the journal); signed by {key.fingerprint}"
    )
    return bundle
