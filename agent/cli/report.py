"""``pue-agent report`` (the signed monthly bundle) and ``pue-agent verify`` (its check)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from agent import metrics
from agent.cli.common import ConfigOption, StateDirOption, fail, out, settings_or_exit
from agent.report.run import ReportError, run_report
from agent.report.verify import Check, verify_bundle

__all__ = ["report", "verify_report"]


def report(
    month: Annotated[str, typer.Option("--month", help="Local calendar month, YYYY-MM.")],
    lang: Annotated[
        Literal["zh", "en", "both"], typer.Option("--lang", help="Report language(s).")
    ] = "both",
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the bundle.")] = Path(),
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
    green: Annotated[
        Path | None,
        typer.Option(
            help="Green file instead of the ledger `green add` keeps: that ledger's format, "
            "`green list --json` output, or a JSON list of {month, kind, energy_kwh, reference}."
        ),
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
    except Exception as exc:
        reason = metrics.storage_error(exc)
        if reason is None:
            raise
        # Disk full or I/O error: the bundle is built in a ".partial" directory renamed
        # only when complete, so nothing half-written looks like a bundle.
        raise fail(
            f"cannot write the report under {out_dir}: {reason}; no bundle was written "
            "(free some space and run it again)",
            code=1,
        ) from exc
    out.print(f"bundle: {result.directory}", highlight=False, markup=False)
    if result.zip_path is not None:
        out.print(f"zip: {result.zip_path}", highlight=False, markup=False)
    out.print(f"signed by key {fingerprint}", highlight=False, markup=False)


def verify_report(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory or .zip.")],
    pubkey: Annotated[
        str | None,
        typer.Option(help="Signer's public key: PEM file, or the raw key in hex/base64."),
    ] = None,
    journal: Annotated[
        list[Path] | None,
        typer.Option(
            metavar="PATH",
            help="The site's journal, to re-derive intervals from raw data. Repeat it for a "
            "site fed over NATS: the first is the site aggregator's journal, each further one "
            "a publishing agent's (recognised by its chain hashes in journal.json).",
        ),
    ] = None,
) -> None:
    """Check a bundle's signature, hashes and every KPI; exit 1 naming the first mismatch."""
    marks = {"ok": "OK  ", "failed": "FAIL", "skipped": "SKIP", "warning": "WARN"}

    def show(check: Check) -> None:
        out.print(
            f"{marks[check.outcome]} {check.name}: {check.detail}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )

    journals = journal or []
    result = verify_bundle(
        bundle,
        pubkey=pubkey,
        journal=journals[0] if journals else None,
        agent_journals=journals[1:],
        on_check=show,
    )
    failure = result.first_failure
    if failure is not None:
        message = f"bundle INVALID: {failure.name}: {failure.detail}"
        out.print(message, highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1)
    out.print("bundle VALID", highlight=False, markup=False)
