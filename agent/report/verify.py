"""``verify``: check a report bundle without trusting the agent that made it.

Checks, in order, stopping at the first failure (which it names):

1. ``manifest.json`` and ``manifest.sig`` are present and the manifest parses;
2. the Ed25519 signature over the manifest bytes verifies with the given public
   key (or, without one, with the key the manifest carries, which proves
   integrity only and is said so);
3. the set of files equals the manifest's list (no file removed, none added);
4. every file's SHA-256 and size match;
5. every KPI in ``data/kpis.json`` is re-computed from the bundled Parquet data
   with the KPI engine the bundle names and compared;
6. with ``--journal``: the journal's chain verifies, the batches named in
   ``journal.json`` carry the recorded hashes, and the interval rows re-derived
   from those raw readings match the bundled ones;
7. for a site fed by publishing agents over NATS (``journal.json`` lists their
   chains), with each agent's journal given: its chain verifies end to end, its first
   and last batch of the month carry the recorded hashes, and the intervals re-derived
   from all agents' readings, merged page by page in the order the aggregator merged
   them (``merge_pages``; :func:`collectors.nats.merge.replay`, the aggregator's own
   de-duplication), match the bundled ones. Agents whose journal is not given are
   named as not checked.
"""

from __future__ import annotations

import io
import json
import math
import sqlite3
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal

import polars as pl
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.energy import EnergyConfig, interval_energy
from agent.energy.silence import describe_silences
from agent.journal import Journal, chain_hash
from agent.keys import SigningKeyError, fingerprint, load_public_key
from agent.kpi import GREEN_SCHEMA, KPI_ENGINE
from agent.periods import month_bounds
from agent.readings import READING_SCHEMA, validate_batch
from agent.report.breakdown import BREAKDOWN_COLUMNS
from agent.report.bundle import (
    GREEN,
    GREEN_HOURLY,
    HISTORY,
    INTERVALS,
    JOURNAL,
    KPIS,
    SILENCES,
    SITE,
    compute_bundle_kpis,
    supply_from_json,
)
from agent.report.manifest import BUNDLE_FORMAT, MANIFEST, SIGNATURE, sha256_stream
from agent.report.rollup import local_hours
from agent.report.sources import batch_hashes, rederive_intervals
from agent.schemas import SILENCE_SCHEMA
from agent.site import Site, parse_site
from collectors.nats.merge import DEFAULT_DEDUPE_WINDOW_S, parse_merge_order, replay

__all__ = ["Check", "VerifyResult", "verify_bundle"]

#: Relative tolerance for re-computed KPI values (summation order may differ in the last bits).
REL_TOLERANCE = 1e-9

Outcome = Literal["ok", "failed", "skipped", "warning"]


@dataclass(frozen=True, slots=True)
class Check:
    """One verification step and its outcome."""

    name: str
    outcome: Outcome
    detail: str


@dataclass
class VerifyResult:
    """All checks run; ``ok`` is false if any failed."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return all(c.outcome != "failed" for c in self.checks)

    @property
    def first_failure(self) -> Check | None:
        """The first failed check, if any."""
        return next((c for c in self.checks if c.outcome == "failed"), None)


class _CheckFailedError(Exception):
    def __init__(self, check: Check) -> None:
        super().__init__(check.detail)
        self.check = check


class _Bundle:
    """Read access to a bundle directory or zip, the same way for both."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self._prefix = ""
        if path.is_file() and zipfile.is_zipfile(path):
            self._zip = zipfile.ZipFile(path)
            tops = {PurePosixPath(n).parts[0] for n in self._zip.namelist() if n.strip("/")}
            self._prefix = f"{tops.pop()}/" if len(tops) == 1 else ""
        elif not path.is_dir():
            raise FileNotFoundError(f"{path}: not a bundle directory or zip")

    def names(self) -> set[str]:
        if self._zip is not None:
            return {
                n.removeprefix(self._prefix)
                for n in self._zip.namelist()
                if not n.endswith("/") and n.startswith(self._prefix)
            } | {n for n in self._zip.namelist() if not n.startswith(self._prefix)}
        return {
            p.relative_to(self.path).as_posix()
            for p in self.path.rglob("*")
            if p.is_file() or p.is_symlink()
        }

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        if self._zip is not None:
            with self._zip.open(self._prefix + name) as handle:
                yield handle
        else:
            path = self.path / name
            if path.is_symlink():
                raise OSError(f"{name} is a symbolic link")
            with path.open("rb") as handle:
                yield handle

    def read(self, name: str) -> bytes:
        with self.open(name) as handle:
            return handle.read()

    @contextmanager
    def local(self, names: list[str]) -> Iterator[Path]:
        """A directory holding ``names`` (the bundle itself, or a temporary extraction)."""
        if self._zip is None:
            yield self.path
            return
        with tempfile.TemporaryDirectory(prefix="pue-verify-") as tmp:
            root = Path(tmp)
            for name in names:
                target = root / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with self.open(name) as src, target.open("wb") as dst:
                    while chunk := src.read(4 << 20):
                        dst.write(chunk)
            yield root

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _fail(name: str, detail: str) -> _CheckFailedError:
    return _CheckFailedError(Check(name, "failed", detail))


def _check_signature(
    bundle: _Bundle, manifest_bytes: bytes, manifest: dict[str, Any], pubkey: str | Path | None
) -> Check:
    signature = bundle.read(SIGNATURE)
    declared = manifest.get("signing_key") or {}
    declared_fp = str(declared.get("fingerprint", "?"))
    key: Ed25519PublicKey
    if pubkey is not None:
        try:
            key = load_public_key(pubkey)
        except SigningKeyError as exc:
            raise _fail("signature", str(exc)) from exc
        given_fp = fingerprint(key)
        if given_fp != declared_fp:
            raise _fail(
                "signature",
                f"bundle says it was signed by key {declared_fp}, not by the given key {given_fp}",
            )
        source = f"given public key {given_fp}"
    else:
        try:
            key = load_public_key(str(declared.get("public_key_pem", "")))
        except SigningKeyError as exc:
            raise _fail("signature", f"manifest carries no usable public key: {exc}") from exc
        source = f"the public key inside the bundle ({fingerprint(key)})"
    try:
        key.verify(signature, manifest_bytes)
    except InvalidSignature as exc:
        raise _fail(
            "signature", f"manifest.sig does not verify for manifest.json with {source}"
        ) from exc
    if pubkey is None:
        return Check(
            "signature",
            "warning",
            f"valid with {source}; this proves integrity only - pass --pubkey with the key "
            "the site registered to prove who signed it",
        )
    return Check("signature", "ok", f"Ed25519 signature valid with {source}")


def _check_file_list(bundle: _Bundle, manifest: dict[str, Any]) -> Check:
    listed: dict[str, Any] = manifest.get("files") or {}
    present = bundle.names() - {MANIFEST, SIGNATURE}
    missing = sorted(set(listed) - present)
    if missing:
        raise _fail("files", f"file removed: {missing[0]} is in the manifest but not in the bundle")
    extra = sorted(present - set(listed))
    if extra:
        raise _fail("files", f"file added: {extra[0]} is in the bundle but not in the manifest")
    return Check("files", "ok", f"{len(listed)} files, exactly those in the manifest")


def _check_hashes(bundle: _Bundle, manifest: dict[str, Any]) -> Check:
    listed: dict[str, Any] = manifest.get("files") or {}
    total = 0
    for name in sorted(listed):
        try:
            with bundle.open(name) as handle:
                digest, size = sha256_stream(handle)
        except OSError as exc:
            raise _fail("hashes", f"{name}: unreadable ({exc})") from exc
        expected = listed[name]
        if digest != expected.get("sha256") or size != expected.get("bytes"):
            raise _fail(
                "hashes",
                f"{name}: SHA-256 {digest} ({size} bytes) does not match the manifest "
                f"({expected.get('sha256')}, {expected.get('bytes')} bytes)",
            )
        total += size
    return Check("hashes", "ok", f"SHA-256 of {len(listed)} files ({total:,} bytes) match")


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=REL_TOLERANCE, abs_tol=1e-12)
    return bool(a == b)


def _compare_kpis(name: str, stated: list[dict[str, Any]], computed: pl.DataFrame) -> int:
    key = ("period_kind", "period", "metric")
    recomputed = {tuple(r[k] for k in key): r for r in computed.to_dicts()}
    stated_keys = {tuple(r[k] for k in key) for r in stated}
    for row in stated:
        k = tuple(row[c] for c in key)
        other = recomputed.get(k)
        label = f"{row['metric']} ({row['period_kind']} {row['period']})"
        if other is None:
            raise _fail(name, f"{label}: in kpis.json but not produced by re-computation")
        for column in ("value", "status", "coverage", "category"):
            if not _same(row[column], other[column]):
                raise _fail(
                    name,
                    f"{label}: kpis.json says {column} = {row[column]!r}, "
                    f"re-computed {other[column]!r}",
                )
    extra = sorted(set(recomputed) - stated_keys)
    if extra:
        raise _fail(name, f"{extra[0]}: re-computed but missing from kpis.json")
    return len(stated)


def _check_kpis(bundle: _Bundle) -> Check:
    document = json.loads(bundle.read(KPIS))
    if document.get("engine") != KPI_ENGINE:
        raise _fail("kpis", f"kpis.json names engine {document.get('engine')!r}, not {KPI_ENGINE}")
    site = parse_site(json.loads(bundle.read(SITE)), source=SITE)
    green_rows = json.loads(bundle.read(GREEN))
    green = pl.DataFrame(green_rows, schema=GREEN_SCHEMA) if green_rows else None
    # Bundles from before hourly matching have no green_hourly.json, and no hourly rows.
    supply = (
        supply_from_json(json.loads(bundle.read(GREEN_HOURLY)))
        if GREEN_HOURLY in bundle.names()
        else None
    )
    with bundle.local([INTERVALS, HISTORY]) as root:
        kpis, history, breakdown = compute_bundle_kpis(
            local_hours(pl.scan_parquet(root / INTERVALS), site),
            pl.scan_parquet(root / HISTORY),
            site,
            green,
            month=str(document["month"]),
            coverage_threshold=float(document["coverage_threshold"]),
            supply=supply,
        )
    n = _compare_kpis("kpis", document["kpis"], kpis)
    n += _compare_kpis("kpis", document["history"], history)
    n += _compare_breakdown(document["breakdown"], breakdown)
    return Check(
        "kpis",
        "ok",
        f"{n:,} values re-computed from {INTERVALS} and {HISTORY} with {KPI_ENGINE} "
        "match kpis.json",
    )


def _check_silences(bundle: _Bundle) -> Check:
    """How each silent period was filled, re-derived from the bundled interval rows."""
    stated = json.loads(bundle.read(SILENCES))
    document = json.loads(bundle.read(KPIS))
    site = parse_site(json.loads(bundle.read(SITE)), source=SITE)
    start, end = month_bounds(str(document["month"]), site.timezone)
    recorded = pl.DataFrame(
        [{k: row[k] for k in SILENCE_SCHEMA.names()} for row in stated],
        schema={**SILENCE_SCHEMA, "start": pl.String(), "end": pl.String()},
    ).with_columns(
        pl.col("start", "end").str.to_datetime(
            "%Y-%m-%dT%H:%M:%SZ", time_zone="UTC", time_unit="us"
        )
    )
    with bundle.local([INTERVALS]) as root:
        computed = describe_silences(recorded, pl.scan_parquet(root / INTERVALS), start, end)
    if computed.height != len(stated):
        raise _fail(
            "silences", f"{SILENCES} lists {len(stated)} periods, re-derived {computed.height}"
        )
    for row, other in zip(stated, computed.to_dicts(), strict=True):
        for column in ("meter", "minutes", "fill", "covered", "energy_kwh"):
            if not _same(row[column], other[column]):
                raise _fail(
                    "silences",
                    f"{row['meter']} silent from {row['start']}: {SILENCES} says {column} = "
                    f"{row[column]!r}, re-derived {other[column]!r}",
                )
    return Check(
        "silences", "ok", f"{len(stated)} silent periods re-derived from {INTERVALS} match"
    )


def _compare_breakdown(stated: list[dict[str, Any]], computed: pl.DataFrame) -> int:
    rows = {r["day"]: r for r in computed.to_dicts()}
    if set(rows) != {r["day"] for r in stated}:
        raise _fail("kpis", "energy breakdown: the days in kpis.json differ from the data")
    for row in stated:
        for column in BREAKDOWN_COLUMNS:
            if not _same(row[column], rows[row["day"]][column]):
                raise _fail(
                    "kpis",
                    f"energy breakdown {column} on {row['day']}: kpis.json says {row[column]!r}, "
                    f"re-computed {rows[row['day']][column]!r}",
                )
    return len(stated) * len(BREAKDOWN_COLUMNS)


def _check_journal(
    bundle: _Bundle, journal_path: Path, agent_journals: Sequence[Path] = ()
) -> list[Check]:
    summary = json.loads(bundle.read(JOURNAL))
    checks = _check_site_journal(bundle, summary, journal_path)
    checks += _check_agents(bundle, summary, agent_journals)
    return checks


def _check_site_journal(
    bundle: _Bundle, summary: dict[str, Any], journal_path: Path
) -> list[Check]:
    if not summary.get("available"):
        raise _fail("journal", "journal.json records no journal chain for this bundle")
    if not journal_path.is_file():
        raise _fail("journal", f"no journal at {journal_path}")
    journal = Journal(journal_path)
    try:
        report = journal.verify()
        if not report.ok:
            raise _fail(
                "journal", f"journal chain broken at batch {report.bad_seq}: {report.problem}"
            )
        checks = [Check("journal", "ok", f"chain of {report.batches_checked} batches verifies")]
        found = batch_hashes(journal_path, [summary["first_seq"], summary["last_seq"]])
        for which in ("first", "last"):
            seq = summary[f"{which}_seq"]
            if found.get(seq) != summary[f"{which}_hash"]:
                raise _fail(
                    "journal",
                    f"{which} batch #{seq}: journal hash {found.get(seq)} differs from "
                    f"journal.json ({summary[f'{which}_hash']})",
                )
        checks.append(
            Check(
                "journal",
                "ok",
                f"batches #{summary['first_seq']}..#{summary['last_seq']} carry the hashes in "
                "journal.json",
            )
        )
        checks.append(
            _rederive(
                bundle,
                lambda site, interval_s: rederive_intervals(
                    journal, site, summary, interval_s=interval_s
                ),
                name="re-derive",
                source="the journal",
            )
        )
        return checks
    finally:
        journal.close()


def _identify(agents: list[dict[str, Any]], paths: Sequence[Path]) -> dict[str, Path]:
    """Which agent each journal belongs to: the one whose first batch's hash it holds."""
    found: dict[str, Path] = {}
    for path in paths:
        if not path.is_file():
            raise _fail("agent journal", f"no journal at {path}")
        try:
            hashes = batch_hashes(path, [int(a["first_seq"]) for a in agents])
        except sqlite3.Error as exc:
            raise _fail("agent journal", f"{path}: not a journal ({exc})") from exc
        owners = [a["agent"] for a in agents if hashes.get(int(a["first_seq"])) == a["first_hash"]]
        if not owners:
            listed = ", ".join(f"{a['agent']} #{a['first_seq']}" for a in agents)
            raise _fail(
                "agent journal",
                f"{path}: holds the chain of none of the agents journal.json lists (no batch "
                f"with the recorded first hash of {listed})",
            )
        agent = str(owners[0])
        if agent in found:
            raise _fail("agent journal", f"{path}: agent {agent}'s journal is given twice")
        found[agent] = path
    return found


def _broken_link(agent: str, path: Path, seq: int, problem: str) -> str:
    """The failure text of a broken agent chain, with the stored and re-derived hash."""
    journal = Journal(path)
    try:
        raw = journal.read_raw(seq - 1, limit=1)
    finally:
        journal.close()
    detail = f"agent {agent}: batch #{seq}: {problem.removeprefix(f'batch {seq}: ')}"
    if raw and raw[0].seq == seq:
        b = raw[0]
        derived = chain_hash(
            b.prev_hash, b.seq, b.kind, b.source, b.n_rows, b.created_us, b.payload
        )
        if derived != b.hash:
            detail += f" (expected hash {b.hash.hex()}, its content gives {derived.hex()})"
    return detail


def _agent_readings(entry: dict[str, Any], path: Path) -> tuple[Check, list[pl.DataFrame]]:
    """Check one agent's chain and hashes; its readings of the recorded range."""
    agent = str(entry["agent"])
    first, last = int(entry["first_seq"]), int(entry["last_seq"])
    journal = Journal(path)
    try:
        report = journal.verify()
        if not report.ok:
            seq = report.bad_seq if report.bad_seq is not None else -1
            raise _fail("agent journal", _broken_link(agent, path, seq, report.problem or "?"))
        found = batch_hashes(path, [first, last])
        for seq, key in ((first, "first_hash"), (last, "last_hash")):
            if found.get(seq) != entry[key]:
                raise _fail(
                    "agent journal",
                    f"agent {agent}: batch #{seq}: journal.json says hash {entry[key]}, the "
                    f"journal holds {found.get(seq)}",
                )
        missing = {seq for lo, hi in entry.get("missing") or [] for seq in range(lo, hi + 1)}
        # As the collector took them in (validated, schema order), one per batch in seq order.
        frames = [
            validate_batch(batch.frame)
            for batch in journal.iter_batches(first - 1, kinds=("readings",))
            if batch.seq <= last and batch.seq not in missing
        ]
    finally:
        journal.close()
    return (
        Check(
            "agent journal",
            "ok",
            f"agent {agent}: chain of {report.batches_checked} batches verifies; batches "
            f"#{first}..#{last} carry the hashes in journal.json",
        ),
        frames,
    )


def _check_agents(bundle: _Bundle, summary: dict[str, Any], paths: Sequence[Path]) -> list[Check]:
    """Each publishing agent's chain, and the intervals re-derived from their merged readings."""
    agents: list[dict[str, Any]] = list(summary.get("agents") or [])
    if not agents:
        if paths:
            raise _fail("agent journal", "journal.json lists no publishing agents' chains")
        return []
    owners = _identify(agents, paths)
    checks: list[Check] = []
    frames: list[list[pl.DataFrame]] = []
    for entry in agents:
        path = owners.get(str(entry["agent"]))
        if path is not None:
            check, agent_frames = _agent_readings(entry, path)
            checks.append(check)
            frames.append(agent_frames)
    unchecked = [str(a["agent"]) for a in agents if str(a["agent"]) not in owners]
    if unchecked:
        checks.append(
            Check(
                "agent journal",
                "skipped",
                f"chains not checked (no --journal given for them): {', '.join(unchecked)}",
            )
        )
        checks.append(
            Check("re-merge", "skipped", "needs the journal of every agent journal.json lists")
        )
        return checks
    order = summary.get("merge_pages")
    if order is None:
        checks.append(
            Check("re-merge", "skipped", "journal.json records no merge order (merge_pages)")
        )
        return checks
    window_us = round(float(summary.get("dedupe_window_s", DEFAULT_DEDUPE_WINDOW_S)) * 1e6)
    try:
        parsed = parse_merge_order(str(order))
    except ValueError as exc:
        raise _fail("re-merge", f"journal.json's merge_pages: {exc}") from exc
    pages = _pages(parsed, frames, [str(a["agent"]) for a in agents])
    merged = replay(pages, window_us)
    kept = merged.kept
    untwinned = _without_twin(frames, kept, window_us)
    note = (
        f"; {merged.late:,} readings dropped as late, {untwinned:,} dropped with no kept "
        "reading of their point within the window (in the publishers' journals, not in "
        "the report)"
        if merged.late or untwinned
        else ""
    )
    checks.append(
        _rederive(
            bundle,
            lambda site, interval_s: interval_energy(
                kept.lazy(), site, EnergyConfig(interval_s=interval_s)
            ).collect(),
            name="re-merge",
            source=f"the {len(agents)} agents' readings merged in the aggregator's "
            f"{len(pages):,} pages",
            note=note,
        )
    )
    return checks


def _pages(
    order: list[list[tuple[int, int]]], frames: list[list[pl.DataFrame]], agents: list[str]
) -> list[pl.DataFrame]:
    """Each recorded page's readings: its agents' next batches, concatenated in stream order.

    ``order`` is ``journal.json``'s ``merge_pages`` parsed: per page, runs of (index
    into ``agents``, batches); the n-th batch an index stands for is that agent's n-th
    reading batch of the recorded range.
    """
    columns = READING_SCHEMA.names()
    taken = [0] * len(frames)
    pages: list[pl.DataFrame] = []
    for number, page in enumerate(order, start=1):
        parts: list[pl.DataFrame] = []
        for index, count in page:
            if index >= len(frames) or taken[index] + count > len(frames[index]):
                who = agents[index] if index < len(agents) else f"#{index}"
                raise _fail(
                    "re-merge",
                    f"journal.json's merge page {number} names more reading batches of agent "
                    f"{who} than its journal holds in the recorded range",
                )
            parts += [f.select(columns) for f in frames[index][taken[index] : taken[index] + count]]
            taken[index] += count
        pages.append(pl.concat(parts, how="vertical"))
    for index, agent_frames in enumerate(frames):
        if taken[index] != len(agent_frames):
            raise _fail(
                "re-merge",
                f"agent {agents[index]}: its journal holds {len(agent_frames)} reading batches "
                f"in the recorded range, journal.json's merge pages name {taken[index]}",
            )
    return pages


def _without_twin(frames: list[list[pl.DataFrame]], kept: pl.DataFrame, window_us: int) -> int:
    """Readings dropped by the merge with no kept reading of their point within the window."""
    columns = READING_SCHEMA.names()
    parts = [f.select(columns) for agent_frames in frames for f in agent_frames]
    if not parts:
        return 0
    key = ["device", "point", "quantity"]
    ts = pl.col("ts").dt.epoch("us")
    every = pl.concat(parts).select(*key, ts.alias("t")).sort("t")
    if kept.height == 0:
        return every.height
    kept_ts = kept.select(*key, ts.alias("t"), ts.alias("kept_t")).sort("t")
    # Both sides sorted on ``t`` above (so within each key too): nothing to check.
    nearest = every.join_asof(
        kept_ts, on="t", by=key, strategy="nearest", tolerance=window_us, check_sortedness=False
    )
    # A kept reading is its own nearest (0 µs away): what is left was dropped, twinless.
    return nearest.filter(pl.col("kept_t").is_null()).height


def _rederive(
    bundle: _Bundle,
    derive: Callable[[Site, int], pl.DataFrame],
    *,
    name: str,
    source: str,
    note: str = "",
) -> Check:
    site = parse_site(json.loads(bundle.read(SITE)), source=SITE)
    bundled = pl.read_parquet(io.BytesIO(bundle.read(INTERVALS)))
    lengths = (bundled["interval_end"] - bundled["interval_start"]).dt.total_seconds()
    modes = lengths.mode().to_list()
    interval_s = int(min(modes)) if modes else 60
    derived = derive(site, interval_s)
    lo, hi = bundled["interval_start"].min(), bundled["interval_start"].max()
    derived = derived.filter(pl.col("interval_start").is_between(lo, hi))
    key = ["meter", "interval_start"]
    # Interval energy is a pure function of the readings, so both sides agree to float noise.
    joined = bundled.join(derived, on=key, how="inner", suffix="_raw")
    bad = joined.filter(
        (pl.col("energy_kwh") - pl.col("energy_kwh_raw")).abs()
        > 1e-6 * pl.max_horizontal(pl.col("energy_kwh").abs(), pl.lit(1.0))
    )
    if bad.height:
        row = bad.row(0, named=True)
        raise _fail(
            name,
            f"{row['meter']} at {row['interval_start']}: bundle {row['energy_kwh']} kWh, "
            f"re-derived from {source} {row['energy_kwh_raw']} kWh "
            f"({bad.height} rows differ)",
        )
    unmatched = bundled.height - joined.height
    return Check(
        name,
        "ok" if unmatched == 0 else "warning",
        f"{joined.height:,} interval rows re-derived from raw readings ({source}) match"
        + (f"; {unmatched:,} bundled rows have no raw readings there" if unmatched else "")
        + note,
    )


def verify_bundle(
    path: Path,
    *,
    pubkey: str | Path | None = None,
    journal: Path | None = None,
    agent_journals: Sequence[Path] = (),
    on_check: Callable[[Check], None] | None = None,
) -> VerifyResult:
    """Verify a bundle directory or zip; see the module docstring for the checks.

    Args:
        path: Bundle directory or ``.zip``.
        pubkey: The signer's public key (PEM file, or raw key in hex/base64).
        journal: The site's journal file, to tie the data to raw readings.
        agent_journals: Journals of the publishing agents ``journal.json`` lists (a site
            fed over NATS), each recognised by the chain hashes recorded for its agent.
        on_check: Called with each check as it completes (for live output).
    """
    result = VerifyResult()

    def record(check: Check) -> None:
        result.checks.append(check)
        if on_check is not None:
            on_check(check)

    try:
        bundle = _Bundle(path)
    except (FileNotFoundError, zipfile.BadZipFile) as exc:
        record(Check("bundle", "failed", str(exc)))
        return result
    try:
        names = bundle.names()
        for required in (MANIFEST, SIGNATURE):
            if required not in names:
                raise _fail("manifest", f"{required} is missing")
        manifest_bytes = bundle.read(MANIFEST)
        try:
            manifest = json.loads(manifest_bytes)
        except ValueError as exc:
            raise _fail("manifest", f"{MANIFEST} is not valid JSON ({exc})") from exc
        if manifest.get("format") != BUNDLE_FORMAT:
            raise _fail("manifest", f"unknown bundle format {manifest.get('format')!r}")
        record(Check("manifest", "ok", f"{manifest.get('site')} {manifest.get('month')}"))
        record(_check_signature(bundle, manifest_bytes, manifest, pubkey))
        # Recorded one by one: a failing hash still shows that the file list passed.
        record(_check_file_list(bundle, manifest))
        record(_check_hashes(bundle, manifest))
        record(_check_kpis(bundle))
        if SILENCES in names:
            record(_check_silences(bundle))
        if journal is not None:
            for check in _check_journal(bundle, journal, agent_journals):
                record(check)
        else:
            record(Check("journal", "skipped", "no --journal given: raw readings not checked"))
    except _CheckFailedError as failed:
        record(failed.check)
    finally:
        bundle.close()
    return result
