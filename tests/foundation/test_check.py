"""`pue-agent check`: every broken site file gives a clear error naming the field."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import ROOT

GOOD_SITE = """
[site]
id = "hall-1"
name = "Hall 1"
timezone = "Asia/Shanghai"
pue_category = 2

[[site.meters]]
id = "grid-a"
device = "grid-a"
energy_point = "import.energy"
role = "grid_import"
metering_point = "incomer"

[[site.meters]]
id = "pdu-01"
device = "pdu-01"
energy_point = "output.energy"
role = "it"
metering_point = "pdu_output"
rating_kw = 20

[[site.meters]]
id = "chiller-1"
device = "chiller-1"
power_point = "input.power"
role = "cooling"

[site.e_dc]
terms = ["grid-a"]

[site.e_it]
terms = ["pdu-*"]

[site.facts]
racks = 10
"""


def run_check(config: Path) -> subprocess.CompletedProcess[str]:
    """``pue-agent check --config config`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "agent", "check", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _check(tmp_path: Path, site_text: str) -> subprocess.CompletedProcess[str]:
    site = tmp_path / "site.toml"
    site.write_text(site_text, encoding="utf-8")
    config = tmp_path / "agent.toml"
    config.write_text(
        f'state_dir = "{tmp_path}/state"\nsite_file = "site.toml"\n', encoding="utf-8"
    )
    return run_check(config)


def test_good_site_passes_and_prints_the_plan(tmp_path: Path) -> None:
    result = _check(tmp_path, GOOD_SITE)
    assert result.returncode == 0, result.stderr
    assert "E_DC = +grid-a" in result.stdout
    assert "E_IT = +pdu-01" in result.stdout
    assert "PUE category 2" in result.stdout
    assert "aggregator (added because a site is configured)" in result.stdout


BROKEN = [
    # (what is broken, edit of the good file, text the error must contain)
    (
        "unknown meter in a formula",
        ('terms = ["grid-a"]', 'terms = ["grid-a", "grid-b"]'),
        "unknown meter 'grid-b'",
    ),
    (
        "glob matching nothing",
        ('terms = ["pdu-*"]', 'terms = ["rack-*"]'),
        "pattern 'rack-*' matches no meter",
    ),
    ("duplicate meter id", ('id = "chiller-1"', 'id = "grid-a"'), "duplicate meter id 'grid-a'"),
    (
        "category 3 with IT at PDU output",
        ("pue_category = 2", "pue_category = 3"),
        "meter 'pdu-01' is at pdu_output",
    ),
    (
        "unknown time zone",
        ('timezone = "Asia/Shanghai"', 'timezone = "Asia/Beijing"'),
        "timezone: unknown time zone 'Asia/Beijing'",
    ),
    ("unknown role", ('role = "cooling"', 'role = "chilling"'), "meters.2.role"),
    ("negative rating", ("rating_kw = 20", "rating_kw = -20"), "meters.1.rating_kw"),
    (
        "meter without a point",
        ('power_point = "input.power"', 'rack = "r1"'),
        "needs an energy_point",
    ),
    ("category out of range", ("pue_category = 2", "pue_category = 4"), "pue_category"),
    ("TOML syntax error", ('name = "Hall 1"', 'name = "Hall 1'), "line 4"),
    ("unknown key", ("racks = 10", "rack_count = 10"), "facts.rack_count"),
    ("bad meter id", ('id = "pdu-01"', 'id = "pdu 01"'), "meters.1.id"),
]


@pytest.mark.parametrize(("what", "edit", "expected"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_site_is_a_clear_error(
    tmp_path: Path, what: str, edit: tuple[str, str], expected: str
) -> None:
    assert edit[0] in GOOD_SITE, what
    result = _check(tmp_path, GOOD_SITE.replace(edit[0], edit[1], 1))
    assert result.returncode != 0, f"{what}: check passed"
    assert expected in result.stderr, f"{what}: {result.stderr}"
    assert "site.toml" in result.stderr, "the error must name the file"
    assert "Traceback" not in result.stderr


def test_field_errors_name_the_line(tmp_path: Path) -> None:
    result = _check(tmp_path, GOOD_SITE.replace("rating_kw = 20", "rating_kw = -20"))
    line = next(i for i, text in enumerate(GOOD_SITE.splitlines(), 1) if "rating_kw" in text)
    assert f"site.toml:{line}:" in result.stderr


def test_unknown_collector_kind_and_bad_option(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(GOOD_SITE, encoding="utf-8")
    config = tmp_path / "agent.toml"
    config.write_text(
        f'state_dir = "{tmp_path}/state"\nsite_file = "site.toml"\n'
        '[[collectors]]\nkind = "lorawan"\n[[collectors]]\nkind = "sim"\nname = "s"\npdus = -1\n',
        encoding="utf-8",
    )
    result = run_check(config)
    assert result.returncode != 0
    assert "collector kind 'lorawan' is unknown" in result.stderr
    assert "collectors.s: pdus" in result.stderr


def test_check_names_the_aggregators_old_kind(tmp_path: Path) -> None:
    # `local_store` (the aggregator's kind when it was a sink) still works; check says so.
    config = tmp_path / "agent.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[[sinks]]\nkind = "local_store"\nname = "store"\n'
    )
    result = run_check(config)
    assert result.returncode == 0, result.stderr
    assert "sink store: interval energy every 60 s" in result.stdout
    assert "'local_store' is the aggregator's old name" in result.stdout


def _check_with(
    tmp_path: Path, site_text: str, config_extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "site.toml").write_text(site_text, encoding="utf-8")
    config = tmp_path / "agent.toml"
    config.write_text(
        f'state_dir = "{tmp_path}/state"\nsite_file = "site.toml"\n{config_extra}',
        encoding="utf-8",
    )
    return subprocess.run(
        [sys.executable, "-m", "agent", "check", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


SIM = '[[collectors]]\nkind = "sim"\nname = "sim"\npdus = 2\n'
MQTT = (
    '[[collectors]]\nkind = "mqtt"\nname = "meters"\nhost = "127.0.0.1"\n'
    'mappings = ["shelly_gen2"]\n'
)


def test_meter_whose_device_no_collector_polls_names_file_and_line(tmp_path: Path) -> None:
    # The sim collector polls grid-1, grid-2, pv-1, ups-*, pdu-001, pdu-002, chiller-1, …:
    # GOOD_SITE's grid-a and pdu-01 are polled by nothing, chiller-1 is.
    result = _check_with(tmp_path, GOOD_SITE, SIM)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = GOOD_SITE.splitlines()
    for device in ("grid-a", "pdu-01"):
        line = lines.index(f'device = "{device}"') + 1
        assert (
            f"site.toml:{line}: meter '{device}': device '{device}' is polled by no collector"
        ) in result.stderr
    assert "chiller-1" not in result.stderr
    fixed = GOOD_SITE.replace('device = "grid-a"', 'device = "grid-1"').replace(
        'device = "pdu-01"', 'device = "pdu-001"'
    )
    assert _check_with(tmp_path, fixed, SIM).returncode == 0


def test_meters_left_to_an_mqtt_collector_are_accepted_and_listed(tmp_path: Path) -> None:
    result = _check_with(tmp_path, GOOD_SITE, SIM + MQTT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "meters expected from meters (topics, at run time): grid-a, pdu-01" in result.stdout


def test_missing_report_font_fails_when_reports_are_configured(tmp_path: Path) -> None:
    # A fontconfig that knows no fonts: fc-match offers nothing CJK.
    fonts = tmp_path / "fonts.conf"
    fonts.write_text(
        f"<?xml version='1.0'?><fontconfig><cachedir>{tmp_path}/fc</cachedir></fontconfig>"
    )
    no_fonts = {"FONTCONFIG_FILE": str(fonts)}
    # No signing key and no timer: this host makes no reports, the font is not needed.
    assert _check_with(tmp_path, GOOD_SITE, "", no_fonts).returncode == 0
    keys = tmp_path / "state" / "keys"
    keys.mkdir(parents=True)
    (keys / "report-signing.key").write_text("placeholder: only its presence matters\n")
    result = _check_with(tmp_path, GOOD_SITE, "", no_fonts)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Noto Sans CJK SC" in result.stderr
    assert "apt-get install fonts-noto-cjk" in result.stderr
    installed = _check_with(tmp_path, GOOD_SITE, "")
    assert installed.returncode == 0, installed.stderr
    assert "reports: font Noto Sans CJK" in installed.stdout
