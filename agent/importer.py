"""``pue-agent import``: historical readings (CSV or Parquet) into the journal as one batch.

Columns: ``ts`` (ISO 8601 with a UTC offset), ``device``, ``point``, ``quantity`` (one of
:data:`agent.readings.QUANTITIES`), ``value``. Every row is checked; if any is bad the
error lists them by line number and nothing is imported. A good file becomes a single
journal batch with source ``import:sha256=<hex of the file>`` and quality
``IMPORTED``, so it is all-or-nothing and traceable to the exact file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from agent.journal import Journal
from agent.readings import QUANTITIES, READING_SCHEMA, Quality, validate_batch
from agent.store import atomic_write_bytes

__all__ = ["ImportFileError", "ImportResult", "import_file", "load_import_file"]

REQUIRED = ("ts", "device", "point", "quantity", "value")
MAX_REPORTED = 20


class ImportFileError(ValueError):
    """The file cannot be imported; the message lists bad rows by line number."""


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import stored."""

    seq: int
    rows: int
    sha256: str
    source: str
    first_ts: datetime
    last_ts: datetime


def _check_csv_text(path: Path, data: bytes) -> None:
    """Refuse a CSV that is not UTF-8 or not one record per line, naming the line.

    Polars' own errors quote the file (an unbalanced quote printed 1,218 lines of it) and
    give no line number; this pass finds the first problem with Python's ``csv`` module,
    which counts lines, and the message carries the line number only, never content.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ImportFileError(
            f"{path}: line {line}: not UTF-8 (byte offset {exc.start}); nothing imported"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    width: int | None = None
    first = 1
    try:
        for record in reader:
            last = reader.line_num
            if last != first:
                raise ImportFileError(
                    f"{path}: line {first}: a quoted field is not closed on its line (the "
                    f"record runs to line {last}); nothing imported"
                )
            if record:
                if width is None:
                    width = len(record)
                elif len(record) != width:
                    raise ImportFileError(
                        f"{path}: line {first}: {len(record)} fields, the header has {width}; "
                        "nothing imported"
                    )
            first = last + 1
    except csv.Error as exc:
        # csv's messages describe the fault ("unexpected end of data"), never the data.
        raise ImportFileError(f"{path}: line {first}: bad CSV ({exc}); nothing imported") from None


def _read(path: Path) -> tuple[pl.DataFrame, int]:
    """The file as all-string columns, and the line number of its first data row."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            _check_csv_text(path, path.read_bytes())
            try:
                return pl.read_csv(path, infer_schema=False), 2
            except pl.exceptions.PolarsError as exc:
                # Polars quotes the offending rows: name the error type only.
                raise ImportFileError(
                    f"{path}: cannot read as CSV ({type(exc).__name__}); nothing imported"
                ) from None
        if suffix in (".parquet", ".pq"):
            frame = pl.read_parquet(path)
            ts = frame.schema.get("ts")
            if isinstance(ts, pl.Datetime):
                if ts.time_zone is None:
                    raise ImportFileError(
                        f"{path}: column 'ts' has no time zone (need UTC offsets)"
                    )
                frame = frame.with_columns(
                    pl.col("ts")
                    .dt.convert_time_zone("UTC")
                    .dt.strftime("%Y-%m-%dT%H:%M:%S%.f+00:00")
                )
            return frame.with_columns(pl.all().cast(pl.String)), 1
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ImportFileError(f"{path}: cannot read ({exc})") from exc
    raise ImportFileError(f"{path}: expected a .csv or .parquet file")


def load_import_file(path: Path) -> tuple[pl.DataFrame, str]:
    """Validate a history file and return it as a reading batch with its SHA-256.

    Raises:
        ImportFileError: for a missing column or any bad row (line numbers listed);
            nothing is returned then.
    """
    if not path.is_file():
        raise ImportFileError(f"{path}: file not found")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    raw, first_line = _read(path)
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise ImportFileError(
            f"{path}: missing column(s) {', '.join(missing)} (need {', '.join(REQUIRED)})"
        )
    if raw.height == 0:
        raise ImportFileError(f"{path}: no rows")
    iso = (
        pl.col("ts")
        .str.strip_chars()
        .str.replace(r"^(\d{4}-\d{2}-\d{2}) ", "${1}T")
        .str.replace(r"Z$", "+00:00")
        .str.to_datetime(
            format="%Y-%m-%dT%H:%M:%S%.f%z", strict=False, time_unit="us", time_zone="UTC"
        )
    )
    value = pl.col("value").str.strip_chars().cast(pl.Float64, strict=False)
    checked = raw.with_row_index("line", offset=first_line).with_columns(
        iso.alias("_ts"), value.alias("_value")
    )
    problems = [
        (pl.col("_ts").is_null(), "ts is not ISO 8601 with a UTC offset"),
        (pl.col("device").str.strip_chars().fill_null("") == "", "device is empty"),
        (pl.col("point").str.strip_chars().fill_null("") == "", "point is empty"),
        (~pl.col("quantity").fill_null("").is_in(list(QUANTITIES)), "quantity is unknown"),
        (pl.col("_value").is_null(), "value is not a number"),
        # nan, inf, -inf, 1e309 (which parses as inf): MQTT rejects them too.
        (~pl.col("_value").is_finite(), "value is not finite"),
    ]
    bad = checked.select(
        "line",
        pl.concat_list([pl.when(test).then(pl.lit(why)) for test, why in problems])
        .list.drop_nulls()
        .list.join("; ")
        .alias("why"),
    ).filter(pl.col("why") != "")
    if bad.height:
        lines = [f"line {line}: {why}" for line, why in bad.head(MAX_REPORTED).iter_rows()]
        more = f"\n... and {bad.height - MAX_REPORTED} more" if bad.height > MAX_REPORTED else ""
        raise ImportFileError(
            f"{path}: {bad.height} bad row(s), nothing imported:\n" + "\n".join(lines) + more
        )
    batch = checked.select(
        pl.col("_ts").alias("ts"),
        pl.col("device").str.strip_chars(),
        pl.col("point").str.strip_chars(),
        "quantity",
        pl.col("_value").alias("value"),
        pl.lit(int(Quality.IMPORTED), pl.UInt8).alias("quality"),
    ).cast(READING_SCHEMA)
    return validate_batch(batch.sort("ts", maintain_order=True)), digest


def import_file(
    path: Path, journal: Journal, *, record_dir: Path, force: bool = False
) -> ImportResult:
    """Validate ``path`` and append it to ``journal`` as one imported batch.

    Args:
        path: CSV or Parquet history file.
        journal: The agent's journal.
        record_dir: Where a record of each imported file (by SHA-256) is kept.
        force: Import even if this exact file was imported before.

    Raises:
        ImportFileError: for a bad file or one already imported (nothing stored).
    """
    batch, digest = load_import_file(path)
    record = record_dir / f"{digest}.json"
    if record.is_file() and not force:
        previous = json.loads(record.read_text(encoding="utf-8"))
        raise ImportFileError(
            f"{path}: this file (sha256 {digest}) was already imported as journal batch "
            f"{previous.get('seq')}; use --force to import it again"
        )
    source = f"import:sha256={digest}"
    appended = journal.append(batch, source=source)
    first, last = batch["ts"].min(), batch["ts"].max()
    assert isinstance(first, datetime) and isinstance(last, datetime)
    atomic_write_bytes(
        record,
        json.dumps(
            {
                "file": str(path),
                "sha256": digest,
                "seq": appended.seq,
                "rows": batch.height,
                "imported_at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
            indent=1,
        ).encode(),
    )
    return ImportResult(appended.seq, batch.height, digest, source, first, last)
