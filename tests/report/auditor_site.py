"""The auditor's month of issue 15: a category-1 Shanxi site with 13 months of history.

Quarter-hour register readings from 2025-10-01 00:00 to 2026-11-01 00:00 (Asia/Shanghai):
two UPS outputs (IT, 50 kWh each per quarter-hour), a grid incomer (100 x PUE kWh) and a
chiller (50 x (PUE - 1) kWh). PUE is 1.19 in every month up to 2026-08 and 1.05 in
2026-09 and 2026-10, so (energy-weighted, by days):

* TTM 2026-09 = (335 x 1.19 + 30 x 1.05) / 365 = 430.15 / 365 = 1.178493… < 1.18: the
  TTM PUE first drops below Shanxi's 1.18 in 2026-09 (2026-08's TTM lacks 2025-09);
* TTM 2026-10 = (304 x 1.19 + 61 x 1.05) / 365 = 425.81 / 365 = 1.166602…;
* October: E_IT = 2,976 x 100 = 297,600 kWh, E_DC = 2,976 x 105 = 312,480 kWh, PUE 1.05.

UPS 2 is silent for three hours on 2026-10-12 (no readings from 02:15 to 05:00 local:
readings at 02:00 and 05:15, 195 minutes apart).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

START = datetime(2025, 9, 30, 16, tzinfo=UTC)  # 2025-10-01 00:00 +08:00
END = datetime(2026, 10, 31, 16, tzinfo=UTC)  # 2026-11-01 00:00 +08:00
LOW_FROM = datetime(2026, 8, 31, 16, tzinfo=UTC)  # 2026-09-01 00:00 +08:00: PUE 1.05
SILENT_FROM = datetime(2026, 10, 11, 18, 0, tzinfo=UTC)  # 2026-10-12 02:00 +08:00 (last read)
SILENT_TO = datetime(2026, 10, 11, 21, 15, tzinfo=UTC)  # 2026-10-12 05:15 +08:00 (next read)
QUARTERS_OCTOBER = 31 * 96

SITE_TOML = """
[site]
id = "sx-1"
name = "Taiyuan DC 1"
name_zh = "太原一号数据中心"
operator = "山西算力示范有限公司"
signer = "王建国"
pue_category = 1

[[site.meters]]
id = "grid-1"
device = "grid"
energy_point = "e"
role = "grid_import"

[[site.meters]]
id = "ups-1"
device = "ups-1"
energy_point = "e"
role = "it"
metering_point = "ups_output"

[[site.meters]]
id = "ups-2"
device = "ups-2"
energy_point = "e"
role = "it"
metering_point = "ups_output"

[[site.meters]]
id = "chiller-1"
device = "chiller"
energy_point = "e"
role = "cooling"

[site.facts]
racks = 1200
project_type = "retrofit"
province = "Shanxi"

[site.facts.emission_factor]
kg_co2_per_kwh = 0.7096
source = "MEE 2022 provincial grid factor"
year = 2022
"""


def write_site(root: Path) -> Path:
    """site.toml and agent.toml (aggregator at 15-minute intervals); returns agent.toml."""
    (root / "site.toml").write_text(SITE_TOML, encoding="utf-8")
    config = root / "agent.toml"
    config.write_text(
        f'state_dir = "{root / "state"}"\nsite_file = "site.toml"\n'
        f'policies_dir = "{root / "no-operator-packs"}"\n'
        '[[sinks]]\nkind = "aggregator"\nname = "agg"\ninterval_s = 900\n',
        encoding="utf-8",
    )
    return config


def readings() -> pl.DataFrame:
    """The import file's rows: ts, device, point, quantity, value."""
    times = pl.datetime_range(START, END, timedelta(minutes=15), eager=True, time_zone="UTC")
    n = times.len()
    pue = np.where((times < LOW_FROM).to_numpy()[:-1], 1.19, 1.05)  # per quarter-hour
    steps = {
        "grid": 100.0 * pue,
        "ups-1": np.full(n - 1, 50.0),
        "ups-2": np.full(n - 1, 50.0),
        "chiller": 50.0 * (pue - 1.0),
    }
    frames = []
    for device, step in steps.items():
        register = 1000.0 + np.concatenate([[0.0], np.cumsum(step)])
        frame = pl.DataFrame({"ts": times, "device": device, "value": register})
        if device == "ups-2":
            frame = frame.filter((pl.col("ts") <= SILENT_FROM) | (pl.col("ts") >= SILENT_TO))
        frames.append(frame)
    return (
        pl.concat(frames)
        .with_columns(pl.lit("e").alias("point"), pl.lit("energy_kwh").alias("quantity"))
        .select("ts", "device", "point", "quantity", "value")
        .sort("ts", "device")
    )


def write_readings(path: Path) -> Path:
    """The import file as Parquet."""
    readings().write_parquet(path)
    return path
