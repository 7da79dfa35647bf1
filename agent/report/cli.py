"""``pue-agent report``, ``pue-agent verify`` and ``pue-agent keys``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import polars as pl
import typer

from agent import keys

if TYPE_CHECKING:
    from agent.report.bundle import BundleResult
    from agent.settings import AgentSettings

__all__ = ["ReportError", "register", "run_report"]

_ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Agent TOML file (default /etc/pue-agent/agent.toml)."),
]
_StateDirOption = Annotated[
    Path | None, typer.Option("--state-dir", help="Override the state directory.")
]


class ReportError(RuntimeError):
    """The report cannot be built (the message says why)."""


def run_report(
    settings: AgentSettings,
    month: str,
    *,
    langs: Sequence[Literal["zh", "en"]] = ("zh", "en"),
    out_dir: Path = Path(),
    green: Path | None = None,
    coverage_threshold: float = 0.95,
    policies_dir: Path | None = None,
    overwrite: bool = False,
    csv: bool = True,
) -> tuple[BundleResult, str]:
    """What ``pue-agent report`` does (the benchmark calls this too).

    Returns:
        The bundle and the signing key's fingerprint.

    Raises:
        ReportError: no site model, a bad month, no usable key, or a bundle error.
    """
    from agent.pipeline import load_site_for  # noqa: PLC0415
    from agent.report.bundle import (  # noqa: PLC0415
        HISTORY_MONTHS,
        BundleError,
        ReportRequest,
        build_bundle,
    )
    from agent.report.periods import MonthError, month_bounds, shift_month  # noqa: PLC0415
    from agent.report.render import FontError  # noqa: PLC0415
    from agent.report.sources import (  # noqa: PLC0415
        journal_summary,
        month_intervals,
        read_history,
    )

    site = load_site_for(settings)
    if site is None:
        raise ReportError("no site model configured: a report needs one (site_file or [site])")
    try:
        start, end = month_bounds(month, site.timezone)
        history_start, _ = month_bounds(shift_month(month, -HISTORY_MONTHS), site.timezone)
    except MonthError as exc:
        raise ReportError(str(exc)) from exc
    try:
        key = keys.load_signing_key(settings)
    except keys.SigningKeyError as exc:
        raise ReportError(str(exc)) from exc
    store = settings.state_dir / "store"
    journal = (
        journal_summary(settings.journal_path, start, end)
        if settings.journal_path.is_file()
        else None
    )
    ledger = pl.DataFrame(json.loads(green.read_text(encoding="utf-8"))) if green else None
    out_dir.mkdir(parents=True, exist_ok=True)
    with month_intervals(store, start, end) as intervals:
        request = ReportRequest(
            site=site,
            month=month,
            intervals=intervals,
            history=read_history(store, history_start, start, timezone=site.timezone),
            green=ledger,
            journal=journal,
            coverage_threshold=coverage_threshold,
            # The packs the live findings used (agent.toml) unless the caller names others.
            policies_dir=policies_dir or settings.policies_path(),
            csv=csv,
        )
        try:
            result = build_bundle(request, key, out_dir, langs, overwrite=overwrite)
        except (BundleError, FontError) as exc:
            raise ReportError(str(exc)) from exc
    return result, key.fingerprint


def report(
    month: Annotated[str, typer.Option("--month", help="Local calendar month, YYYY-MM.")],
    lang: Annotated[
        Literal["zh", "en", "both"], typer.Option("--lang", help="Report language(s).")
    ] = "both",
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the bundle.")] = Path(),
    config: _ConfigOption = None,
    state_dir: _StateDirOption = None,
    green: Annotated[
        Path | None,
        typer.Option(help="Green ledger (JSON list of {month, kind, energy_kwh, reference})."),
    ] = None,
    coverage_threshold: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.95,
    policies_dir: Annotated[
        Path | None,
        typer.Option(help="Operator policy packs (default: policies_dir of agent.toml)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing bundle.")] = False,
    csv: Annotated[
        bool, typer.Option(help="Also write the data as zstd CSV (the slowest step at scale).")
    ] = True,
) -> None:
    """Build the signed monthly report bundle (directory and .zip) for auditors."""
    from agent.cli import fail, out, settings_or_exit  # noqa: PLC0415

    settings = settings_or_exit(config, state_dir)
    langs: tuple[Literal["zh", "en"], ...] = ("zh", "en") if lang == "both" else (lang,)
    try:
        result, fingerprint = run_report(
            settings,
            month,
            langs=langs,
            out_dir=out_dir,
            green=green,
            coverage_threshold=coverage_threshold,
            policies_dir=policies_dir,
            overwrite=overwrite,
            csv=csv,
        )
    except ReportError as exc:
        raise fail(str(exc)) from exc
    out.print(f"bundle: {result.directory}", highlight=False, markup=False)
    if result.zip_path is not None:
        out.print(f"zip: {result.zip_path}", highlight=False, markup=False)
    out.print(f"signed by key {fingerprint}", highlight=False, markup=False)


def verify(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory or .zip.")],
    pubkey: Annotated[
        str | None,
        typer.Option(help="Signer's public key: PEM file, or the raw key in hex/base64."),
    ] = None,
    journal: Annotated[
        Path | None, typer.Option(help="The site's journal, to re-derive intervals from raw data.")
    ] = None,
) -> None:
    """Check a bundle's signature, hashes and every KPI; exit 1 naming the first mismatch."""
    from agent.cli import out  # noqa: PLC0415
    from agent.report.verify import Check, verify_bundle  # noqa: PLC0415

    marks = {"ok": "OK  ", "failed": "FAIL", "skipped": "SKIP", "warning": "WARN"}

    def show(check: Check) -> None:
        out.print(
            f"{marks[check.outcome]} {check.name}: {check.detail}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )

    result = verify_bundle(bundle, pubkey=pubkey, journal=journal, on_check=show)
    failure = result.first_failure
    if failure is not None:
        message = f"bundle INVALID: {failure.name}: {failure.detail}"
        out.print(message, highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1)
    out.print("bundle VALID", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add ``report``, ``verify`` and ``keys`` to the ``pue-agent`` command."""
    app.command("report")(report)
    app.command("verify")(verify)
    keys.register(app)
