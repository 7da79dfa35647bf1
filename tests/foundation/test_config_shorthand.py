"""Config as short as Telegraf's, checked through ``pue-agent check`` as an operator runs it.

Credentials in a collector's ``defaults`` by secret name, one entry for many hosts, site
meters from one pattern entry, and what ``check`` prints: the device counts, never a
secret (neither when all is well nor in an error).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import ROOT

SECRET_VALUES = {
    "snmp_auth_key": "auth-Zq81vX3k",
    "snmp_priv_key": "priv-Jm55pT0w",
    "snmp_community": "comm-Hh72rA9d",
    "bmc_password": "bmc-Wq19cN4e",
}

SITE = """
id = "hall"
name = "Hall"
timezone = "Asia/Shanghai"
pue_category = 2

[[meters]]
id = "grid-[1-2]"
device = "grid-[1-2]"
energy_point = "total.energy"
role = "grid_import"
metering_point = "incomer"

[[meters]]
id = "pdu-[001-200]"
device = "pdu-[001-200]"
energy_point = "output.energy"
role = "it"
metering_point = "pdu_output"
rating_kw = 20

[[meters]]
id = "gpu-[01-03]"
device = "gpu-[01-03]"
power_point = "input.power"
role = "monitor"

[e_dc]
terms = ["grid-*"]

[e_it]
terms = ["pdu-*"]

[facts]
racks = 200
"""

AGENT = """
state_dir = "{state}"
site_file = "site.toml"

[[collectors]]
kind = "snmp"
name = "pdus"
[collectors.defaults]
profile = "apc-rpdu2"
v3 = {{ user = "pue", auth_key_secret = "snmp_auth_key", priv_key_secret = "snmp_priv_key" }}
[[collectors.devices]]
name = "pdu-[001-200]"
host = "10.20.1.[11-210]"
[[collectors.devices]]
name = "grid-[1-2]"
hosts = ["10.20.0.1", "10.20.0.2"]
profile = "janitza-umg96"
community_secret = "snmp_community"

[[collectors]]
kind = "redfish"
name = "bmcs"
[collectors.defaults]
username = "reader"
password_secret = "bmc_password"
[[collectors.devices]]
name = "gpu-[01-03]"
url = "https://10.30.0.[1-3]"
"""


def _secrets(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in SECRET_VALUES.items():
        (folder / name).write_text(value + "\n", encoding="utf-8")
    return folder


def _check(
    tmp_path: Path, agent: str = AGENT, site: str = SITE
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "site.toml").write_text(site, encoding="utf-8")
    config = tmp_path / "agent.toml"
    config.write_text(agent.format(state=tmp_path / "state"), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "agent", "check", "--config", str(config)],
        cwd=ROOT,
        env={
            **os.environ,
            "CREDENTIALS_DIRECTORY": str(_secrets(tmp_path / "credstore")),
            "COLUMNS": "250",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    for value in SECRET_VALUES.values():
        assert value not in result.stdout + result.stderr
    return result


def test_short_config_passes_and_check_counts_devices_and_meters(tmp_path: Path) -> None:
    result = _check(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    pdus = next(line for line in result.stdout.splitlines() if line.startswith("collector pdus"))
    assert pdus.startswith("collector pdus: snmp: 202 device(s)")
    # Per profile: the defaults' profile for the range entry, the entry's own for the grid.
    assert pdus.endswith("(200 apc-rpdu2, 2 janitza-umg96)")
    assert "collector bmcs: redfish: 3 device(s)" in result.stdout
    assert "205 meters" in result.stdout
    # The E_IT line wraps at the terminal width: its terms, in order.
    e_it = result.stdout.split("E_IT =", 1)[1].split("policy packs")[0]
    assert e_it.split() == [f"+pdu-{n:03d}" for n in range(1, 201)]
    assert "E_DC = +grid-1 +grid-2" in result.stdout


def test_defaults_credentials_reach_every_device(tmp_path: Path) -> None:
    # A missing secret named only in [defaults] fails the check for the devices that use it.
    (tmp_path / "credstore").mkdir()
    result = _check(
        tmp_path, AGENT.replace('priv_key_secret = "snmp_priv_key"', 'priv_key_secret = "nope"')
    )
    assert result.returncode == 1
    assert "secret 'nope' not found" in result.stderr


BROKEN_AGENT = [
    (
        "inline community in defaults",
        ('profile = "apc-rpdu2"\n', 'profile = "apc-rpdu2"\ncommunity = "comm-Hh72rA9d"\n'),
        "collectors.pdus.defaults.community: Extra inputs are not permitted",
    ),
    (
        "host range of another length",
        ('host = "10.20.1.[11-210]"', 'host = "10.20.1.[11-209]"'),
        "collectors.pdus.devices: entry 0: host: '10.20.1.[11-209]': range [11-209] is not in "
        "name 'pdu-[001-200]' "
        "and has 199 values where name has 200",
    ),
    (
        "hosts list of another length",
        ('hosts = ["10.20.0.1", "10.20.0.2"]', 'hosts = ["10.20.0.1"]'),
        "collectors.pdus.devices: entry 1: name 'grid-[1-2]' expands to 2 device(s) but hosts "
        "lists 1",
    ),
    (
        "no credentials anywhere",
        (
            'v3 = {{ user = "pue", auth_key_secret = "snmp_auth_key", '
            'priv_key_secret = "snmp_priv_key" }}\n',
            "",
        ),
        "device 'pdu-001': give community_secret or v3 (on the device or in [collectors.defaults])",
    ),
    (
        "bad range in a device name",
        ('name = "pdu-[001-200]"', 'name = "pdu-[200-001]"'),
        "collectors.pdus.devices: entry 0: name: 'pdu-[200-001]': range [200-001] runs backwards",
    ),
    (
        "bad range in a BMC url",
        ('url = "https://10.30.0.[1-3]"', 'url = "https://10.30.0.[1-4]"'),
        "collectors.bmcs.devices: entry 0: url: 'https://10.30.0.[1-4]': range [1-4] is not in "
        "name 'gpu-[01-03]'",
    ),
]


@pytest.mark.parametrize(
    ("what", "edit", "expected"), BROKEN_AGENT, ids=[b[0] for b in BROKEN_AGENT]
)
def test_broken_collector_shorthand_is_named(
    tmp_path: Path, what: str, edit: tuple[str, str], expected: str
) -> None:
    del what
    old, new = edit
    assert old in AGENT
    result = _check(tmp_path, AGENT.replace(old, new))
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr


BROKEN_SITE = [
    (
        "backwards",
        ('id = "pdu-[001-200]"', 'id = "pdu-[200-001]"'),
        "range [200-001] runs backwards",
    ),
    ("unbalanced", ('id = "pdu-[001-200]"', 'id = "pdu-[001-200"'), "unbalanced '[' or ']'"),
    ("not numeric", ('id = "pdu-[001-200]"', 'id = "pdu-[a-z]"'), "'[a-z]' is not a range"),
    (
        "device range of another length",
        ('device = "pdu-[001-200]"', 'device = "pdu-[001-199]"'),
        "has 199 values where id has 200",
    ),
    (
        "device without the range",
        ('device = "pdu-[001-200]"', 'device = "pdu-001"'),
        "two meters read the same device point",
    ),
]


@pytest.mark.parametrize(("what", "edit", "expected"), BROKEN_SITE, ids=[b[0] for b in BROKEN_SITE])
def test_broken_meter_pattern_is_named_with_its_line(
    tmp_path: Path, what: str, edit: tuple[str, str], expected: str
) -> None:
    old, new = edit
    assert old in SITE
    result = _check(tmp_path, site=SITE.replace(old, new))
    assert result.returncode == 1
    assert expected in result.stderr, result.stderr
    if what != "device without the range":
        # File, line of the pattern entry's id, the meter's index and field.
        line = (
            SITE.replace(old, new)
            .splitlines()
            .index(
                next(x for x in SITE.replace(old, new).splitlines() if x.startswith('id = "pdu-'))
            )
            + 1
        )
        assert re.search(rf"site\.toml:{line}: meters\.1\.(id|device): ", result.stderr), (
            result.stderr
        )
