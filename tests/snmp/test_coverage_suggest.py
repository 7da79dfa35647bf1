"""``probe snmp --dump`` and ``--suggest``: a walk written as snmprec, a profile drafted from it.

Run as an operator would (the real command) against the session's snmpsim. The
Vertiv MN03 recording is the worked example of docs/snmp-profiles.md: a 3-phase PDU
with no total, whose phase table the draft must find with the units VERTIV-V5-MIB
states (pduPhaseVoltage decivolts, pduPhaseCurrent centiamps, pduPhaseRealPower W).
"""

from __future__ import annotations

import asyncio
import json
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli import app
from collectors.snmp.client import UdpDispatcher
from collectors.snmp.collector import NoProfileError, resolve_plan
from collectors.snmp.poller import DevicePlan
from collectors.snmp.profiles import Profile, load_profiles
from collectors.snmp.suggest import suggest_profile
from collectors.snmp.walk import DEFAULT_ROOTS, parse_snmprec
from tests.servers.snmp import SnmpsimServer
from tests.snmp.conftest import SNMP_FIXTURES
from tests.snmp.helpers import poll_plan, sim_session
from tests.snmp.test_probe import probe

#: In-process runs for the cases that need no device (a process start costs seconds).
runner = CliRunner()

VERTIV = "coverage/vertiv-pdu_mn03edr1"
PHASE = "1.3.6.1.4.1.21239.5.2.3.2.1"  # VERTIV-V5-MIB pduPhaseEntry


@pytest.fixture(scope="module")
def dumped(sim: SnmpsimServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Vertiv recording as `probe snmp --dump` writes it back from the device."""
    out = tmp_path_factory.mktemp("dump") / "vertiv.snmprec"
    result = probe(f"127.0.0.1:{sim.port}", "-c", VERTIV, "--dump", str(out))
    assert result.returncode == 0, result.stderr
    assert f"to {out}" in result.stderr
    return out


def test_dump_writes_what_the_device_answers(dumped: Path) -> None:
    """Every varbind of the recording under the walked subtrees comes back, same value."""
    recording = parse_snmprec((SNMP_FIXTURES / f"{VERTIV}.snmprec").read_text(encoding="utf-8"))
    roots = [tuple(map(int, r.split("."))) for r in DEFAULT_ROOTS]
    expected = {r.oid: r.value for r in recording if any(r.oid[: len(x)] == x for x in roots)}
    got = {r.oid: r.value for r in parse_snmprec(dumped.read_text(encoding="utf-8"))}
    assert got == expected
    assert len(got) == 66  # system group 7 + the VERTIV-V5 tree 59 (interfaces are not walked)


def test_suggest_drafts_the_phase_table(dumped: Path, sim: SnmpsimServer) -> None:
    """The draft loads as a profile, names the MIB's units and reads the right watts."""
    result = runner.invoke(app, ["probe", "snmp", "--suggest", "--walk", str(dumped)])
    assert result.exit_code == 0, result.stderr
    assert "confirm every CONFIRM line" in result.stderr
    data = tomllib.loads(result.stdout)
    profile = Profile.model_validate({"name": "drafted", **data})
    by_column = {m.column: m for m in profile.metrics}
    assert by_column[f"{PHASE}.12"].quantity == "power_w"  # pduPhaseRealPower, W
    assert by_column[f"{PHASE}.12"].scale == 1.0
    assert by_column[f"{PHASE}.4"].quantity == "voltage_v"  # pduPhaseVoltage, decivolts
    assert by_column[f"{PHASE}.4"].scale == 0.1
    assert by_column[f"{PHASE}.8"].quantity == "current_a"  # pduPhaseCurrent, centiamps
    assert by_column[f"{PHASE}.8"].scale == 0.01
    assert by_column[f"{PHASE}.13"].quantity == "apparent_power_va"  # pduPhaseApparentPower
    assert profile.match.sys_object_id == ["1.3.6.1.4.1.21239.42.1.53"]
    assert all("CONFIRM" in line for line in result.stdout.splitlines() if line.startswith("name"))
    # Polled with the draft: phase 1 = pduPhaseRealPower.1 = 1464 W (206.8 V x 7.25 A x 0.976).
    readings = asyncio.run(_poll(sim, VERTIV, profile))
    assert readings["power.1"] == 1464.0
    assert readings["voltage.1"] == pytest.approx(2068 / 10)
    assert readings["current.1"] == pytest.approx(725 / 100)


async def _poll(sim: SnmpsimServer, community: str, profile: Profile) -> dict[str, float]:
    frame = await poll_plan(sim.port, community, DevicePlan(profile))
    return dict(zip(frame["point"], frame["value"], strict=True))


def test_suggest_from_units_the_device_writes() -> None:
    """Rittal CMC III names each variable's unit beside it: the value column is power."""
    walk = parse_snmprec(
        (SNMP_FIXTURES / "coverage/rittal-cmc-iii-pu_pdu-controller.snmprec").read_text(
            encoding="utf-8"
        )
    )
    powers = [c for c in suggest_profile(walk).candidates if c.quantity == "power_w"]
    # cmcIIIVarValueInt (column 11) in the rows whose cmcIIIVarUnit (column 5) says "W".
    assert [".".join(map(str, c.column)) for c in powers] == ["1.3.6.1.4.1.2606.7.4.2.2.1.11"]
    assert "unit" in powers[0].evidence


def test_suggest_bad_input(tmp_path: Path) -> None:
    """A missing file is a usage error; a walk with nothing usable drafts nothing, says so."""
    missing = runner.invoke(app, ["probe", "snmp", "--suggest", "--walk", str(tmp_path / "no")])
    assert missing.exit_code == 2 and "cannot read" in missing.stderr
    junk = tmp_path / "junk.snmprec"
    junk.write_text("not a walk\n1.3.6|2|\n1.3.6.1.2.1.1.2.0|6|x.y\n\x00|4|\n", encoding="utf-8")
    result = runner.invoke(app, ["probe", "snmp", "--suggest", "--walk", str(junk)])
    assert result.exit_code == 0, result.stderr
    assert "No power, voltage or current column" in result.stdout
    assert "drafted 0 metric(s)" in result.stderr
    alone = runner.invoke(app, ["probe", "snmp", "--walk", str(junk)])
    assert alone.exit_code == 2 and "--walk FILE goes with --suggest" in alone.stderr
    nothing = runner.invoke(app, ["probe", "snmp", "--suggest"])
    assert nothing.exit_code == 2 and "give HOST[:PORT]" in nothing.stderr


def test_unmatched_device_points_to_dump_and_suggest(sim: SnmpsimServer) -> None:
    """The ATS answers, no profile fits: the error names its sysObjectID and what to do."""

    async def run() -> str:
        dispatcher = UdpDispatcher()
        await dispatcher.open()
        try:
            session = sim_session(dispatcher, sim.port, "coverage/ats", label="ats")
            with pytest.raises(NoProfileError) as raised:
                await resolve_plan(session, load_profiles(), "auto", None, 40)
            return str(raised.value)
        finally:
            dispatcher.close()

    message = asyncio.run(run())
    assert "no profile matches" in message and "1.3.6.1.4.1.37662.1.2.2.1" in message
    assert "--suggest" in message and "--dump" in message


def test_suggest_on_a_large_walk_is_ranked_capped_and_grouped() -> None:
    """Raritan PX3, 7,996 varbinds: a draft of at most 16 metrics, table by table.

    Tables with a power column come first; each table's metrics stand together under one
    header; what the cap leaves out is named, and every guess still says CONFIRM.
    """
    walk = parse_snmprec((SNMP_FIXTURES / "raritan-pdu_px3.snmprec").read_text(encoding="utf-8"))
    assert len(walk) > 7000
    draft = suggest_profile(walk)
    profile = Profile.model_validate({"name": "drafted", **tomllib.loads(draft.toml)})
    assert 0 < len(profile.metrics) <= 16
    assert profile.metrics[0].quantity == "power_w"
    # Groups: the table of each metric, in order, never returns to an earlier table.
    tables = [m.column.rsplit(".", 1)[0] for m in profile.metrics if m.column]
    runs = [t for i, t in enumerate(tables) if i == 0 or t != tables[i - 1]]
    assert len(runs) == len(set(runs))
    headers = [line for line in draft.toml.splitlines() if line.startswith("# --- table ")]
    assert [h.split()[3].rstrip(",") for h in headers] == runs
    assert "weaker candidate column(s) left out" in draft.toml
    names = [line for line in draft.toml.splitlines() if line.startswith("name = ")]
    assert names and all("CONFIRM" in line for line in names)


def test_probe_marks_a_profile_sum(sim: SnmpsimServer) -> None:
    """`probe snmp` says which readings are the profile's sums (flagged DERIVED).

    Vertiv MN03: total.power = pduPhaseRealPower 1464 + 1477 + 1458 = 4399 W, a sum;
    phase.1.power = 1464 W is the device's own value.
    """
    result = probe(f"127.0.0.1:{sim.port}", "-c", VERTIV, "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["point"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert rows["total.power"]["value"] == 4399.0
    assert rows["total.power"]["derived"] == "DERIVED (sum)"
    assert rows["phase.1.power"]["value"] == 1464.0
    assert rows["phase.1.power"]["derived"] == ""
