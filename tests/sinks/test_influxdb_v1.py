"""InfluxDB sink, 1.x API, against a real InfluxDB 1.6.7 started for the test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import polars as pl
import pytest

from agent.journal import Journal
from agent.readings import make_batch
from agent.schemas import FINDING_SCHEMA, INTERVAL_SCHEMA, KPI_SCHEMA
from agent.settings import ConfigError
from agent.sinks import influxdb
from collectors.sim.simulator import SiteSimulator
from tests.servers.influxdb import InfluxDB1, start_influxdb
from tests.sinks.helpers import T0, drain, fill_journal, journal_frame, make_settings, sim_site

DB = "pue"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB1]:
    influx = start_influxdb(tmp_path_factory.mktemp("influxdb"))
    try:
        yield influx
    finally:
        influx.stop()


@pytest.fixture
def db(server: InfluxDB1, request: pytest.FixtureRequest) -> str:
    """A fresh database per test."""
    name = f"{DB}_{request.node.name}".replace("[", "_").replace("]", "_")
    server.create_database(name)
    return name


def _sink(server: InfluxDB1, db: str, tmp_path: Path, name: str = "influx", **extra: object):  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path)
    options = {"api": "v1", "url": server.url, "database": db, "batch_points": 5000, **extra}
    return influxdb.build(name, options, settings), settings


def _per_series(frame: pl.DataFrame) -> dict[tuple[str, str], tuple[int, float]]:
    agg = frame.group_by("device", "point").agg(pl.len(), pl.col("value").sum())
    return {(r[0], r[1]): (r[2], r[3]) for r in agg.iter_rows()}


def _influx_per_series(server: InfluxDB1, db: str) -> dict[tuple[str, str], tuple[int, float]]:
    out: dict[tuple[str, str], tuple[int, float]] = {}
    for quantity in ("power_w", "energy_kwh"):
        rows = server.rows(
            f'SELECT count("{quantity}") AS n, sum("{quantity}") AS s FROM pue_reading '
            "GROUP BY device, point",
            db=db,
        )
        for row in rows:
            if row["n"]:
                out[(row["device"], row["point"])] = (row["n"], row["s"])
    return out


async def test_readings_round_trip_with_roles_and_idempotent_replay(
    server: InfluxDB1, db: str, tmp_path: Path
) -> None:
    sim = SiteSimulator(pdus=6)
    site = sim_site(sim)
    journal = Journal(tmp_path / "journal.sqlite")
    total = fill_journal(journal, sim, ticks=40)
    sink, settings = _sink(server, db, tmp_path)
    await drain(sink, journal, settings, site)

    assert journal.cursor("influx") == journal.head[0]
    # Every reading, plus one real-time PUE point per batch of the newest 16 (REALTIME_TAIL:
    # a backlog's older batches yield none; each tick moves the PUE).
    assert sink.points_written == total + 16
    expected = _per_series(journal_frame(journal))
    got = _influx_per_series(server, db)
    assert got.keys() == expected.keys()
    for key, (count, total_value) in expected.items():
        assert got[key][0] == count
        assert got[key][1] == pytest.approx(total_value, rel=1e-12)
    roles = server.rows('SHOW TAG VALUES FROM pue_reading WITH KEY = "role"', db=db)
    assert {r["value"] for r in roles} == {
        "grid_import",
        "onsite_renewable",
        "monitor",
        "it",
        "cooling",
        "other",
    }
    one = server.rows(
        "SELECT power_w, quality, site, role FROM pue_reading WHERE device = 'pdu-001' "
        "AND point = 'output.power' ORDER BY time LIMIT 1",
        db=db,
    )[0]
    first = journal_frame(journal).filter(
        (pl.col("device") == "pdu-001") & (pl.col("point") == "output.power")
    )
    assert one["power_w"] == first["value"][0]
    assert one["time"] == int(first["ts"].dt.epoch("us")[0])
    assert (one["quality"], one["site"], one["role"]) == (16, "demo", "it")

    # A second sink from the start of the journal (a replay after a crash): no duplicates.
    replay, _ = _sink(server, db, tmp_path, name="influx-replay")
    await drain(replay, journal, settings, site)
    assert _influx_per_series(server, db) == got


async def test_derived_frames_written_and_read_back(
    server: InfluxDB1, db: str, tmp_path: Path
) -> None:
    sim = SiteSimulator(pdus=2)
    sink, _ = _sink(server, db, tmp_path)
    sink.site = sim_site(sim)
    starts = [T0 + timedelta(minutes=15 * i) for i in range(8)]
    intervals = pl.DataFrame(
        {
            "meter": ["pdu-001.output"] * 8,
            "interval_start": starts,
            "interval_end": [s + timedelta(minutes=15) for s in starts],
            "energy_kwh": [1.25 + i for i in range(8)],
            "coverage": [1.0] * 7 + [0.5],
            "flags": [0] * 7 + [2],
            "method": ["register"] * 8,
        },
        schema=INTERVAL_SCHEMA,
    )
    kpis = pl.DataFrame(
        {
            "site": ["demo", "demo", "demo"],
            "period_kind": ["day", "day", "interval"],
            "period": ["2026-10-01", "2026-10-02", "2026-10-01T00:00"],
            "period_start": [T0, T0 + timedelta(days=1), T0],
            "period_end": [
                T0 + timedelta(days=1),
                T0 + timedelta(days=2),
                T0 + timedelta(minutes=15),
            ],
            "metric": ["pue", "pue", "pue"],
            "value": [1.31, None, 1.29],
            "unit": ["ratio"] * 3,
            "status": ["ok", "insufficient_data", "ok"],
            "coverage": [1.0, 0.2, 1.0],
            "category": [2, 2, 2],
        },
        schema=KPI_SCHEMA,
    )
    finding = dict.fromkeys(FINDING_SCHEMA.names()) | {
        "site": "demo",
        "period": "2026-10",
        "policy_id": "shanxi-2024-35",
        "rule_id": "shanxi-2024-35-4",
        "document": "晋政办发〔2024〕35号",
        "clause": 'PUE 不高于 1.25, "年均"',
        "result": "not_eligible",
        "advisory": False,
        "metric": "pue",
        "window": "ttm",
        "measured_value": 1.31,
        "comparator": "<=",
        "threshold": 1.25,
        "benefit_cny": 0.0,
        "category": 2,
    }
    findings = pl.DataFrame([finding], schema=FINDING_SCHEMA)

    assert (await sink.write_frames("intervals", intervals)).points == 8
    assert (await sink.write_frames("kpis", kpis)).points == 3
    report = await sink.write_frames("findings", findings)
    assert (report.points, report.quarantined, report.complete) == (1, 0, True)
    await sink.close()

    rows = server.rows("SELECT * FROM pue_interval ORDER BY time", db=db)
    assert [r["energy_kwh"] for r in rows] == intervals["energy_kwh"].to_list()
    assert rows[-1]["flags"] == 2 and rows[-1]["coverage"] == 0.5
    assert {(r["meter"], r["device"], r["role"], r["duration_s"]) for r in rows} == {
        ("pdu-001.output", "pdu-001", "it", 900.0)
    }
    rows = server.rows("SELECT * FROM pue_kpi WHERE period_kind = 'day' ORDER BY time", db=db)
    assert [(r["value"], r["status"], r["category"]) for r in rows] == [
        (1.31, "ok", "2"),
        (None, "insufficient_data", "2"),
    ]
    rows = server.rows("SELECT * FROM pue_finding", db=db)
    assert len(rows) == 1
    assert rows[0]["document"] == "晋政办发〔2024〕35号"
    assert rows[0]["clause"] == finding["clause"]
    # The period label is site-local (Asia/Shanghai): October starts at 16:00 UTC on 30 Sep.
    assert rows[0]["time"] == int((T0 - timedelta(hours=8)).timestamp() * 1_000_000)


async def test_tag_escaping_round_trips_through_influxdb(
    server: InfluxDB1, db: str, tmp_path: Path
) -> None:
    devices = ["机房 A,1=2", "pdu 7", "a=b,c", "x\\y"]
    journal = Journal(tmp_path / "journal.sqlite")
    journal.append(
        make_batch(T0, devices, ["outlet 1.power"] * 4, "power_w", [1.0, 2.0, 3.0, 4.0]),
        source="test",
    )
    sink, settings = _sink(server, db, tmp_path)
    await drain(sink, journal, settings, None)
    tags = server.rows('SHOW TAG VALUES FROM pue_reading WITH KEY = "device"', db=db)
    assert sorted(r["value"] for r in tags) == sorted(devices)
    rows = server.rows("SELECT power_w, device, point FROM pue_reading", db=db)
    assert {(r["device"], r["point"], r["power_w"]) for r in rows} == {
        (d, "outlet 1.power", v) for d, v in zip(devices, [1.0, 2.0, 3.0, 4.0], strict=True)
    }


async def test_type_conflict_quarantines_only_the_bad_points(
    server: InfluxDB1, db: str, tmp_path: Path
) -> None:
    # Someone else already wrote humidity_pct as a string into this shard.
    httpx.post(
        f"{server.url}/write",
        params={"db": db, "precision": "u"},
        content=f'pue_reading,device=other humidity_pct="high" {int(T0.timestamp() * 1e6)}',
    ).raise_for_status()
    sim = SiteSimulator(pdus=3)
    journal = Journal(tmp_path / "journal.sqlite")
    total = fill_journal(journal, sim, ticks=5)
    bad = make_batch(
        T0 + timedelta(seconds=5),
        ["crac-1", "crac-2"],
        ["room.humidity"] * 2,
        "humidity_pct",
        [41.5, 43.0],
    )
    journal.append(bad, source="test")
    total += fill_journal(journal, sim, ticks=2, first=5)
    sink, settings = _sink(server, db, tmp_path, batch_points=100_000)
    await drain(sink, journal, settings, None)

    records = sink.quarantine.read()
    assert [r["line"].split(" ")[1] for r in records] == [
        "quality=0i,humidity_pct=41.5",
        "quality=0i,humidity_pct=43.0",
    ]
    assert all(r["status"] == 400 and "field type conflict" in r["message"] for r in records)
    assert sink.quarantine.path == settings.state_dir / "quarantine" / "influx.jsonl"
    assert sink.alarm is not None and "'influx'" in sink.alarm and "2 readings" in sink.alarm
    # Everything else is in InfluxDB, and the cursor moved on (nothing retried forever).
    counted = server.rows(
        "SELECT count(power_w) AS p, count(energy_kwh) AS e FROM pue_reading", db=db
    )[0]
    assert counted["p"] + counted["e"] == total
    assert journal.cursor("influx") == journal.head[0]


async def test_wrong_credentials_raise_an_alarm_without_the_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = start_influxdb(tmp_path / "influx-auth", auth=True)
    try:
        server.create_database(DB)
        server.query("CREATE USER agent WITH PASSWORD 'right-pw-4711'", method="POST", epoch=None)
        server.query(f'GRANT WRITE ON "{DB}" TO agent', method="POST", epoch=None)
        journal = Journal(tmp_path / "journal.sqlite")
        fill_journal(journal, SiteSimulator(pdus=2), ticks=3)
        wrong = "wrong-pw-0815-secret"
        settings = make_settings(tmp_path, {"influx_user": "agent", "influx_pw": wrong})
        options = {
            "api": "v1",
            "url": server.url,
            "database": DB,
            "username_secret": "influx_user",
            "password_secret": "influx_pw",
        }
        sink = influxdb.build("ops-influx", options, settings)
        await drain(sink, journal, settings, None)
        assert sink.alarm is not None
        assert "'ops-influx'" in sink.alarm and "credentials" in sink.alarm
        assert "influx_pw" in sink.alarm  # names the secret, not its value
        assert journal.cursor("ops-influx") == 0  # nothing lost: it all waits in the journal
        out = capsys.readouterr()
        assert "alarm=auth" in out.out + out.err
        for text in (sink.alarm, out.out, out.err, *sink.health.history):
            assert wrong not in text

        (settings.secrets_dir / "influx_pw").write_text("right-pw-4711", encoding="utf-8")  # type: ignore[operator]
        sink = influxdb.build("ops-influx", options, settings)
        await drain(sink, journal, settings, None)
        assert sink.alarm is None
        assert journal.cursor("ops-influx") == journal.head[0]
        rows = server.rows("SELECT count(power_w) FROM pue_reading", db=DB)
        assert rows[0]["count"] == 3 * len(SiteSimulator(pdus=2).devices)
    finally:
        server.stop()


def test_config_errors_name_the_field_and_never_a_secret(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, {"tok": "tok-value-123"})
    with pytest.raises(ConfigError, match=r"sinks\.x: .*api v2 needs org, bucket"):
        influxdb.build("x", {"url": "http://127.0.0.1:1", "token_secret": "tok"}, settings)
    with pytest.raises(ConfigError, match="secret 'missing' not found") as info:
        influxdb.build(
            "x",
            {"url": "http://127.0.0.1:1", "org": "o", "bucket": "b", "token_secret": "missing"},
            settings,
        )
    assert "tok-value-123" not in str(info.value)
    with pytest.raises(ConfigError, match="credentials in secrets"):
        influxdb.build("x", {"api": "v1", "url": "http://u:p@h:1", "database": "d"}, settings)
    with pytest.raises(ConfigError, match="unknown quantities"):
        influxdb.build(
            "x",
            {"api": "v1", "url": "http://h:1", "database": "d", "readings": ["watts"]},
            settings,
        )
    with pytest.raises(ConfigError, match="derived_bucket is for api v2"):
        influxdb.build(
            "x",
            {"api": "v1", "url": "http://h:1", "database": "d", "derived_bucket": "k"},
            settings,
        )
    with pytest.raises(ConfigError, match="derived_retention_policy is for api v1"):
        influxdb.build(
            "x",
            {"url": "http://h:1", "org": "o", "bucket": "b", "token_secret": "tok",
             "derived_retention_policy": "kpi"},
            settings,
        )  # fmt: skip
    v2 = influxdb.build(
        "x",
        {"url": "http://h:1", "org": "o", "bucket": "raw", "derived_bucket": "kpi",
         "token_secret": "tok"},
        settings,
    )  # fmt: skip
    assert "bucket raw" in v2.describe() and "bucket kpi" in v2.describe()
    assert json.dumps({"ok": True})


async def test_raw_and_derived_go_to_their_retention_policies_and_realtime_follows_formulas(
    server: InfluxDB1, db: str, tmp_path: Path
) -> None:
    # deploy/influxdb.md: raw data in a short default policy, KPIs in one kept forever.
    server.query(
        f'CREATE RETENTION POLICY "raw" ON "{db}" DURATION 90d REPLICATION 1 DEFAULT',
        method="POST",
        epoch=None,
    )
    server.query(
        f'CREATE RETENTION POLICY "kpi" ON "{db}" DURATION INF REPLICATION 1',
        method="POST",
        epoch=None,
    )
    sim = SiteSimulator(pdus=3)
    site = sim_site(sim)
    journal = Journal(tmp_path / "journal.sqlite")
    fill_journal(journal, sim, ticks=6)
    sink, settings = _sink(
        server, db, tmp_path, retention_policy="raw", derived_retention_policy="kpi"
    )
    assert "rp raw" in sink.describe() and "rp kpi" in sink.describe()
    await drain(sink, journal, settings, site)
    kpi = pl.DataFrame(
        [
            {
                "site": "demo",
                "period_kind": "day",
                "period": "2026-10-01",
                "period_start": T0,
                "period_end": T0 + timedelta(days=1),
                "metric": "pue",
                "value": 1.4,
                "unit": "ratio",
                "status": "ok",
                "coverage": 1.0,
                "category": 2,
            }
        ],
        schema=KPI_SCHEMA,
    )
    sink2, _ = _sink(
        server,
        db,
        tmp_path,
        name="influx-2",
        retention_policy="raw",
        derived_retention_policy="kpi",
    )
    assert (await sink2.write_frames("kpis", kpi)).points == 1
    await sink2.close()

    def count(rp: str, measurement: str, field: str) -> int:
        rows = server.rows(f'SELECT count("{field}") FROM "{rp}"."{measurement}"', db=db)
        return rows[0]["count"] if rows else 0

    assert count("kpi", "pue_kpi", "value") == 1 and count("raw", "pue_kpi", "value") == 0
    assert (
        count("raw", "pue_reading", "power_w") > 0 and count("kpi", "pue_reading", "power_w") == 0
    )
    assert count("raw", "pue_realtime", "pue") == 6 and count("kpi", "pue_realtime", "pue") == 0

    # Each tick carries every meter's power: the real-time PUE of a tick is
    # sum(sign × power) over the E_DC terms / the same over the E_IT terms, by the site model.
    power_point = {m.id: (m.device, m.power_point) for m in site.meters}
    expected = {}
    for batch in journal.iter_batches(kinds=("readings",)):
        frame = batch.frame.filter(pl.col("quantity") == "power_w")
        value = {(d, p): v for d, p, v in frame.select("device", "point", "value").iter_rows()}

        def total(formula: str, value: dict = value) -> float:  # type: ignore[type-arg]
            return sum(sign * value[power_point[m]] for sign, m in site.expand(formula))

        expected[int(frame["ts"].max().timestamp() * 1_000_000)] = total("e_dc") / total("e_it")
    rows = server.rows('SELECT "pue" FROM "raw"."pue_realtime" WHERE "site" = \'demo\'', db=db)
    assert {r["time"]: r["pue"] for r in rows} == pytest.approx(expected, rel=1e-12)
