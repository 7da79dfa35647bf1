"""Build the signed monthly report bundle (a directory and the same as one ``.zip``).

Layout (see ``docs/report.md``)::

    <site>-<month>/
      report.pdf, report.html          primary language (zh when both are asked for)
      report.en.pdf, report.en.html    second language, with --lang both
      data/intervals.parquet|.csv.zst  the month's interval rows (INTERVAL_SCHEMA)
      data/history.parquet|.csv.zst    daily per-meter roll-up of the 22 months before (TTM)
      data/kpis.json                   every KPI (month, days, TTM, TTM history)
      data/findings.json               rule findings
      data/site.json, data/green.json  the site model and green ledger the KPIs used
      data/green_hourly.json           green supply placed in time (contract hours,
                                       certificate production periods): hourly matching
      data/silences.json               meters' silent periods and how their energy was filled
      journal.json                     journal chain hashes covering the month
      manifest.json, manifest.sig      SHA-256 of every file; Ed25519 signature

KPIs are computed from the *written* Parquet files, exactly as ``verify`` will
(one pass over the minute rows into an hourly roll-up, then the agent's KPI
engine), so a bundle that verifies is one whose numbers came from its own data.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
import zipfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import zstandard

from agent.energy.silence import describe_silences
from agent.keys import SigningKey, public_key_pem
from agent.kpi import KPI_ENGINE, compute_kpis
from agent.kpi.compute import sort_kpis
from agent.kpi.hourly import (
    CERTIFICATE_SCHEMA,
    CONTRACT_HOURS_SCHEMA,
    GreenSupply,
    hourly_kpis,
    match_hours,
)
from agent.periods import month_bounds, shift_month
from agent.report.breakdown import daily_breakdown
from agent.report.i18n import Lang
from agent.report.manifest import (
    BUNDLE_FORMAT,
    MANIFEST,
    SIGNATURE,
    bundle_files,
    encode_manifest,
    sha256_stream,
    sign_manifest,
)
from agent.report.quality import event_table, meter_coverage
from agent.report.render import MAX_TABLE_ROWS, ReportData, render_html, render_pdf
from agent.report.rollup import local_days, local_hours
from agent.schemas import FINDING_SCHEMA, INTERVAL_SCHEMA, KPI_SCHEMA, SILENCE_SCHEMA, PeriodKind
from agent.site import Site
from rules import evaluate_for_site, load_packs

__all__ = [
    "HISTORY_MONTHS",
    "BundleError",
    "BundleResult",
    "ReportRequest",
    "build_bundle",
    "compute_bundle_kpis",
    "report_file_names",
]

#: Months of history before the report month kept in the bundle: 11 for the TTM figure,
#: 11 more so each point of the 12-month TTM history chart is re-computable.
HISTORY_MONTHS = 22
INTERVALS = "data/intervals.parquet"
#: CSV copies are zstd-compressed (``zstd -d``): 10x smaller, and faster to write than plain.
INTERVALS_CSV = "data/intervals.csv.zst"
HISTORY = "data/history.parquet"
HISTORY_CSV = "data/history.csv.zst"
KPIS = "data/kpis.json"
FINDINGS = "data/findings.json"
SITE = "data/site.json"
GREEN = "data/green.json"
GREEN_HOURLY = "data/green_hourly.json"
SILENCES = "data/silences.json"
JOURNAL = "journal.json"


_log = logging.getLogger(__name__)


class _Stages:
    """Debug log of how long each build stage took (for the benchmark)."""

    def __init__(self) -> None:
        self._last = time.perf_counter()

    def done(self, stage: str) -> None:
        now = time.perf_counter()
        _log.debug("report stage %s: %.1f s", stage, now - self._last)
        self._last = now


class BundleError(RuntimeError):
    """The bundle cannot be built (the message says why)."""


@dataclass(frozen=True, slots=True)
class ReportRequest:
    """What a report is built from.

    ``intervals`` may cover more than the month (it is filtered); ``history`` holds
    the earlier months at any granularity (rolled up per meter and local day).
    ``findings`` is ``None`` to run the rules engine, or a FINDING_SCHEMA frame.
    ``silences`` holds the meters' recorded silent periods (``SILENCE_SCHEMA``; those
    overlapping the month are shown with how their energy was filled).
    """

    site: Site
    month: str
    intervals: pl.LazyFrame
    history: pl.LazyFrame | None = None
    green: pl.DataFrame | None = None
    journal: Mapping[str, Any] | None = None
    findings: pl.DataFrame | None = None
    coverage_threshold: float = 0.95
    policies_dir: Path | None = None
    csv: bool = True
    silences: pl.DataFrame | None = None
    #: Green supply placed in time for the hourly-matching section (``None``: meters only).
    supply: GreenSupply | None = None


@dataclass(frozen=True, slots=True)
class BundleResult:
    """Where the bundle was written and the figures it holds."""

    directory: Path
    zip_path: Path | None
    kpis: pl.DataFrame
    findings: pl.DataFrame


def report_file_names(langs: Sequence[Lang]) -> dict[Lang, tuple[str, str]]:
    """(html, pdf) names per language: the first language gets ``report.*``."""
    names: dict[Lang, tuple[str, str]] = {}
    for i, lang in enumerate(langs):
        suffix = "" if i == 0 else f".{lang}"
        names[lang] = (f"report{suffix}.html", f"report{suffix}.pdf")
    return names


def _kpi_rows_json(frame: pl.DataFrame) -> list[dict[str, Any]]:
    rows = frame.select(KPI_SCHEMA.names()).with_columns(
        pl.col("period_start", "period_end").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    return rows.to_dicts()


#: Period kinds in the bundle: per-interval PUE is a dashboard figure (docs/pue.md), not reported.
REPORT_KINDS = (PeriodKind.HOUR, PeriodKind.DAY, PeriodKind.MONTH, PeriodKind.TTM)


def supply_json(supply: GreenSupply) -> dict[str, Any]:
    """``data/green_hourly.json``: contract hours and certificates as hourly matching read them."""
    return {
        "contracts": supply.contracts.to_dicts(),
        "certificates": supply.certificates.to_dicts(),
    }


def supply_from_json(document: Mapping[str, Any]) -> GreenSupply:
    """Inverse of :func:`supply_json`."""
    return GreenSupply(
        pl.DataFrame(document.get("contracts") or [], schema=CONTRACT_HOURS_SCHEMA),
        pl.DataFrame(document.get("certificates") or [], schema=CERTIFICATE_SCHEMA),
    )


def bundle_hours(hourly: pl.DataFrame, site: Site, supply: GreenSupply) -> pl.DataFrame:
    """The month's matched hours (``HOUR_SCHEMA``) from the bundle's hourly roll-up.

    The battery queue starts at the month (the bundle holds the month's hours only).
    """
    return match_hours(hourly.lazy().select(INTERVAL_SCHEMA.names()), site, supply).collect()


def compute_bundle_kpis(
    hourly: pl.DataFrame,
    history: pl.LazyFrame,
    site: Site,
    green: pl.DataFrame | None,
    *,
    month: str,
    coverage_threshold: float,
    supply: GreenSupply | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Every figure of the bundle, from its interval files; ``verify`` calls this too.

    Args:
        hourly: The month's hourly roll-up of ``data/intervals.parquet``.
        history: ``data/history.parquet`` (daily roll-ups of the months before).
        site: The site model.
        green: The documentary green ledger.
        month: The report month.
        coverage_threshold: Below it a figure is ``insufficient_data``.
        supply: ``data/green_hourly.json``: adds the hourly-matching KPIs of the days and
            the month (``None``, a bundle without that file: none).

    Returns:
        ``(kpis, history_kpis, breakdown)``: the month's KPI rows, the month and TTM
        rows of each of the 11 months before (TTM chart, "first time below" rules),
        and the daily energy breakdown.
    """
    month_rows = hourly.lazy().select(INTERVAL_SCHEMA.names())
    kpis = compute_kpis(
        pl.concat([history, month_rows], how="vertical"),
        site,
        green,
        month=month,
        coverage_threshold=coverage_threshold,
        kinds=REPORT_KINDS,
    )
    if supply is not None:
        matched = hourly_kpis(
            bundle_hours(hourly, site, supply),
            site,
            month=month,
            coverage_threshold=coverage_threshold,
            kinds=(PeriodKind.DAY, PeriodKind.MONTH),
        )
        kpis = sort_kpis(pl.concat([kpis, matched], how="vertical"))
    earlier = [
        compute_kpis(
            history,
            site,
            green,
            month=shift_month(month, -back),
            coverage_threshold=coverage_threshold,
            # History is rolled up per local day: month and TTM sums are exact, hours are not.
            kinds=(PeriodKind.MONTH, PeriodKind.TTM),
        )
        for back in range(11, 0, -1)
    ]
    history_kpis = pl.concat(earlier) if earlier else pl.DataFrame(schema=KPI_SCHEMA)
    return kpis, history_kpis, daily_breakdown(month_rows, site)


#: zstd level of the CSV copies: level 1 is ~2 % larger than 3 and a third cheaper.
CSV_ZSTD_LEVEL = 1
#: Level 1 with a 128 KiB window and a 1,024-entry hash table (level 1: 512 KiB, 16,384)
#: that stays in the CPU cache: on interval CSV, ~20 % less CPU and ~12 % smaller (the
#: rows repeat at short range). Any zstd decoder reads it.
_CSV_ZSTD_PARAMS = zstandard.ZstdCompressionParameters.from_level(
    CSV_ZSTD_LEVEL, window_log=17, hash_log=10, threads=-1
)
_ISO = "%Y-%m-%dT%H:%M:%SZ"
#: One minute in each Datetime time unit (the grid the interval timestamps lie on).
_MINUTE = {"ns": 60_000_000_000, "us": 60_000_000, "ms": 60_000}
#: A text field Polars quotes (``quote_style="necessary"``): empty, or holding , " CR LF.
_NEEDS_QUOTES = r'^$|[,"\r\n]'


def _format_times(column: pl.Series) -> pl.Series:
    """A Datetime column as ``_ISO`` text, or unchanged when the shortcut does not apply.

    Formatting each timestamp is most of the cost of the CSV, and a batch of interval
    rows holds few distinct minutes: when every timestamp of the column lies on a whole
    minute and the batch spans no more minutes than it has rows, each minute of the span
    is formatted once and the column is a lookup into that table (the same text that
    ``datetime_format`` gives). Otherwise (nulls, seconds, long spans) Polars formats it.
    """
    dtype = column.dtype
    if not isinstance(dtype, pl.Datetime) or column.len() == 0 or column.null_count():
        return column
    unit = _MINUTE[dtype.time_unit]
    ints = column.to_physical()
    lo, hi = ints.min(), ints.max()
    assert isinstance(lo, int) and isinstance(hi, int)
    if (hi - lo) // unit >= column.len() or not (ints % unit == 0).all():
        return column
    table = pl.int_range(lo, hi + 1, unit, dtype=pl.Int64, eager=True).cast(dtype)
    return table.dt.strftime(_ISO).gather((ints - lo) // unit).alias(column.name)


def _csv_batch(batch: pl.DataFrame) -> tuple[pl.DataFrame, bool]:
    """``batch`` with its times as text, and whether no field of it needs quotes.

    Polars checks every text field for characters that need quoting; when none can
    (checked once per run of equal values: the rows are sorted by meter), the batch is
    written with ``quote_style="never"``, which gives the same text for less work.
    """
    plain = not any(re.search(_NEEDS_QUOTES, name) for name in batch.columns)
    for name, dtype in batch.schema.items():
        if not plain:
            break
        if dtype == pl.String:
            runs = batch.get_column(name).rle().struct.field("value")
            plain = not runs.str.contains(_NEEDS_QUOTES).any()
        elif not (dtype.is_numeric() or isinstance(dtype, pl.Datetime)):
            plain = False
    return batch.with_columns(_format_times(column) for column in batch.iter_columns()), plain


def _write_csv(source: pl.LazyFrame, target: Path) -> None:
    """``source`` as zstd CSV: UTC ISO 8601 times, floats in their shortest exact form.

    Polars streams the rows in batches (memory stays flat); each batch is formatted
    (times through :func:`_format_times`) and handed to a ``zstandard`` writer whose
    compression runs on its own threads, beside the formatting.
    """
    compressor = zstandard.ZstdCompressor(compression_params=_CSV_ZSTD_PARAMS)
    with target.open("wb") as raw, compressor.stream_writer(raw, closefd=False) as packed:
        header = True
        for batch in source.collect_batches():
            text, plain = _csv_batch(batch)
            text.write_csv(
                packed,
                include_header=header,
                datetime_format=_ISO,
                quote_style="never" if plain else "necessary",
            )
            header = False
        if header:  # no rows: the header alone, as sink_csv writes it
            pl.DataFrame(schema=source.collect_schema()).write_csv(packed)


def _write_json(path: Path, document: Any) -> None:
    path.write_text(
        json.dumps(document, ensure_ascii=False, indent=1, sort_keys=True) + "\n",
        encoding="utf-8",
    )


def _zip(directory: Path, target: Path) -> None:
    tmp = target.with_suffix(".zip.tmp")
    names = [*bundle_files(directory), MANIFEST, SIGNATURE]
    with zipfile.ZipFile(tmp, "w", allowZip64=True) as archive:
        for name in names:
            path = directory / name
            info = zipfile.ZipInfo.from_file(path, f"{directory.name}/{name}")
            # Parquet, zstd CSV and PDF are compressed already: store them (deflate costs
            # time for nothing); JSON and HTML shrink well.
            if name.endswith((".parquet", ".pdf", ".zst")):
                info.compress_type = zipfile.ZIP_STORED
            else:
                info.compress_type = zipfile.ZIP_DEFLATED
            # ZipFile.write copies in 8 KiB chunks; 4 MiB chunks make the copy disk-bound.
            with path.open("rb") as src, archive.open(info, "w", force_zip64=True) as dst:
                shutil.copyfileobj(src, dst, 4 << 20)
    tmp.replace(target)


def build_bundle(
    request: ReportRequest,
    key: SigningKey,
    out_dir: Path,
    langs: Sequence[Lang] = ("zh", "en"),
    *,
    make_zip: bool = True,
    overwrite: bool = False,
) -> BundleResult:
    """Write the bundle directory (and zip) for ``request``; see the module docstring.

    Raises:
        BundleError: if the bundle exists (and ``overwrite`` is false) or the month has
            no interval rows at all.
    """
    site, month = request.site, request.month
    start, end = month_bounds(month, site.timezone)
    history_start, _ = month_bounds(shift_month(month, -HISTORY_MONTHS), site.timezone)
    name = f"{site.id}-{month}"
    final = out_dir / name
    if final.exists() and not overwrite:
        raise BundleError(f"{final} exists (use --overwrite to replace it)")
    stages = _Stages()
    work = out_dir / f".{name}.partial"
    shutil.rmtree(work, ignore_errors=True)
    (work / "data").mkdir(parents=True)

    in_month = (pl.col("interval_start") >= start) & (pl.col("interval_start") < end)
    month_rows = request.intervals.filter(in_month).select(INTERVAL_SCHEMA.names())
    # LZ4: twice as fast to write as zstd for ~1.8x the size; every Parquet reader has it.
    month_rows.sink_parquet(work / INTERVALS, compression="lz4", statistics=True)
    stages.done("intervals.parquet")
    intervals = pl.scan_parquet(work / INTERVALS)
    # The CSV copies are written from the bundled Parquet in a thread: Polars and zstd
    # release the GIL, so they overlap the roll-ups, KPIs and the (Python) charts and PDFs.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="report-csv")
    csv_jobs = [pool.submit(_write_csv, intervals, work / INTERVALS_CSV)] if request.csv else []
    hourly = local_hours(intervals, site)
    stages.done("hourly roll-up")
    if hourly.height == 0:
        pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(work, ignore_errors=True)
        raise BundleError(f"no interval data for {site.id} in {month}")
    history_source = (
        request.history if request.history is not None else pl.LazyFrame(schema=INTERVAL_SCHEMA)
    )
    local_days(
        history_source.filter(
            (pl.col("interval_start") >= history_start) & (pl.col("interval_start") < start)
        ),
        site,
    ).sink_parquet(work / HISTORY, compression="zstd")
    history = pl.scan_parquet(work / HISTORY)
    stages.done("history")
    if request.csv:
        csv_jobs.append(pool.submit(_write_csv, history, work / HISTORY_CSV))
    pool.shutdown(wait=False)

    green = request.green
    site_doc = site.model_dump(mode="json")
    _write_json(work / SITE, site_doc)
    _write_json(work / GREEN, green.to_dicts() if green is not None else [])
    supply = request.supply if request.supply is not None else GreenSupply.empty()
    _write_json(work / GREEN_HOURLY, supply_json(supply))

    kpis, history_kpis, breakdown = compute_bundle_kpis(
        hourly,
        history,
        site,
        green,
        month=month,
        coverage_threshold=request.coverage_threshold,
        supply=supply,
    )
    stages.done("kpis")
    packs = load_packs(request.policies_dir)
    if request.findings is not None:
        findings, rules_engine = request.findings.select(FINDING_SCHEMA.names()), "supplied"
    else:
        findings = evaluate_for_site(pl.concat([history_kpis, kpis]), site, month, packs)
        rules_engine = f"rules.evaluate_for_site ({', '.join(p.id for p in packs) or 'none'})"
    generated = datetime.now(UTC).replace(microsecond=0)
    _write_json(
        work / KPIS,
        {
            "format": BUNDLE_FORMAT,
            "site": site.id,
            "month": month,
            "engine": KPI_ENGINE,
            "coverage_threshold": request.coverage_threshold,
            "kpis": _kpi_rows_json(kpis),
            "history": _kpi_rows_json(history_kpis),
            "breakdown": breakdown.to_dicts(),
        },
    )
    _write_json(
        work / FINDINGS,
        {"engine": rules_engine, "findings": findings.to_dicts()},
    )
    silences = describe_silences(
        request.silences if request.silences is not None else pl.DataFrame(schema=SILENCE_SCHEMA),
        intervals,
        start,
        end,
    )
    _write_json(
        work / SILENCES,
        silences.with_columns(pl.col("start", "end").dt.strftime(_ISO)).to_dicts(),
    )
    _write_json(
        work / JOURNAL,
        dict(request.journal) if request.journal is not None else {"available": False},
    )

    stages.done("findings and json")
    coverage = meter_coverage(hourly, site, start, end)
    events, events_total = event_table(intervals, limit=MAX_TABLE_ROWS)
    ttm_history = (
        pl.concat([history_kpis, kpis])
        .filter((pl.col("period_kind") == "ttm") & (pl.col("metric") == "pue"))
        .select("period", "value", "status")
        .sort("period")
    )
    data = ReportData(
        site=site,
        month=month,
        start=start,
        end=end,
        kpis=kpis,
        ttm_history=ttm_history,
        coverage=coverage,
        events=events,
        events_total=events_total,
        findings=findings,
        journal=(
            request.journal
            if request.journal
            and (request.journal.get("available") or request.journal.get("agents"))
            else None
        ),
        fingerprint=key.fingerprint,
        kpi_engine=KPI_ENGINE,
        breakdown=breakdown,
        coverage_threshold=request.coverage_threshold,
        generated=generated,
        silences=silences,
        packs={pack.id: pack for pack in packs},
        hourly=bundle_hours(hourly, site, supply),
        hourly_supplied=bool(supply.contracts.height or supply.certificates.height),
    )
    stages.done("quality tables")
    for lang, (html_name, pdf_name) in report_file_names(langs).items():
        html = render_html(data, lang)
        (work / html_name).write_text(html, encoding="utf-8")
        render_pdf(html, work / pdf_name)

    stages.done("html and pdf")
    for job in csv_jobs:
        job.result()
    stages.done("csv (waited)")
    files = []
    for rel in bundle_files(work):
        with (work / rel).open("rb") as handle:
            digest, size = sha256_stream(handle)
        files.append((rel, digest, size))
    manifest = encode_manifest(
        {
            "format": BUNDLE_FORMAT,
            "site": site.id,
            "month": month,
            "period_start": start.isoformat(),
            "period_end": end.isoformat(),
            "generated": generated.isoformat(),
            "signing_key": {
                "algorithm": "Ed25519",
                "fingerprint": key.fingerprint,
                "public_key_pem": public_key_pem(key.public),
            },
        },
        files,
    )
    (work / MANIFEST).write_bytes(manifest)
    (work / SIGNATURE).write_bytes(sign_manifest(manifest, key.private))
    stages.done("hashes and signature")

    if final.exists():
        shutil.rmtree(final)
    work.rename(final)
    zip_path: Path | None = None
    if make_zip:
        zip_path = out_dir / f"{name}.zip"
        _zip(final, zip_path)
        stages.done("zip")
    return BundleResult(final, zip_path, kpis, findings)
