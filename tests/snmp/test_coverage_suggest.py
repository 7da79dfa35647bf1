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
from collectors.snmp.suggest import SYS_OBJECT_ID, suggest_profile
from collectors.snmp.walk import DEFAULT_ROOTS, WalkRow, parse_snmprec
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


# -- tables indexed by sensor type (the last index part says what is measured) --------------

PX3 = "raritan-pdu_px3"
INLET_VALUE = "1.3.6.1.4.1.13742.6.5.2.3.1.4"  # PDU2-MIB measurementsInletSensorValue
OUTLET_VALUE = "1.3.6.1.4.1.13742.6.5.4.3.1.4"  # PDU2-MIB measurementsOutletSensorValue


def _walk(name: str) -> list[WalkRow]:
    return parse_snmprec((SNMP_FIXTURES / f"{name}.snmprec").read_text(encoding="utf-8"))


def _drafted(walk: list[WalkRow]) -> tuple[str, Profile]:
    toml = suggest_profile(walk).toml
    return toml, Profile.model_validate({"name": "drafted", **tomllib.loads(toml)})


def test_suggest_reads_the_px3_inlet_by_sensor_type(sim: SnmpsimServer) -> None:
    """Raritan PX3: V, I and P of the inlet are rows of one column, told apart by type.

    measurementsInletSensorValue.pdu.inlet.sensorType: .1.1.4 = 229 (rmsVoltage),
    .1.1.1 = 7467 (rmsCurrent), .1.1.5 = 1665 (activePower); 229 V x 7.467 A = 1709.9 VA,
    and 1665 W / 1709.9 VA = 0.97 is a power factor. The draft reads the column with
    where = { sensor = N } and the shipped raritan-px profile's watts.
    """
    toml, profile = _drafted(_walk(PX3))
    inlet = {m.where["sensor"]: m for m in profile.metrics if m.column == INLET_VALUE}
    assert {s: (m.quantity, m.scale) for s, m in inlet.items()} == {
        5: ("power_w", 1.0),  # inletSensorDecimalDigits 0: 1665 x 10^0 W
        4: ("voltage_v", 1.0),  # digits 0: 229 V
        1: ("current_a", 0.001),  # digits 3: 7467 x 10^-3 = 7.467 A
        6: ("apparent_power_va", 1.0),  # 1751 VA, within 3 % of 1709.9 VA
    }
    assert all(m.index == ["i1", "i2", "sensor"] for m in inlet.values())
    assert profile.match.present == [INLET_VALUE]
    # The outlets' column is read the same way (outlet 1: 228 V x 0.633 A, 143 W).
    outlet = {m.where["sensor"]: m.quantity for m in profile.metrics if m.column == OUTLET_VALUE}
    assert outlet == {5: "power_w", 4: "voltage_v", 1: "current_a"}
    assert 0 < len(profile.metrics) <= 16
    # Each such metric says the last index part was read as a sensor type, with the sums.
    notes = [b for b in toml.split("[[metrics]]") if f'column = "{INLET_VALUE}"' in b]
    assert len(notes) == 4
    assert all("last index part read as a sensor type" in n for n in notes)
    assert "229 V x 7.467 A = 1709.94 VA against 1665 W, power factor 0.97" in notes[0]

    async def both() -> tuple[dict[str, float], dict[str, float]]:
        drafted = await _poll(sim, PX3, profile)
        shipped = await _poll(sim, PX3, load_profiles()["raritan-px"])
        return drafted, shipped

    drafted, shipped = asyncio.run(both())
    power = inlet[5].point.format(i1=1, i2=1)
    # Shipped: 1665 x 10^-inletSensorDecimalDigits(0) = 1665 W; drafted: 1665 x 1.
    assert drafted[power] == shipped["pdu.1.inlet.1.power"] == 1665.0
    # 7467 x 10^-3 (digits column) = 7467 x 0.001 (drafted scale) = 7.467 A.
    current = inlet[1].point.format(i1=1, i2=1)
    assert drafted[current] == pytest.approx(shipped["pdu.1.inlet.1.current"])
    assert drafted[current] == pytest.approx(7.467)


#: A made-up sensor table: entry 1.3.6.1.4.1.99999.1.2.1, column 2 (available) and
#: column 3 (value), index unit.sensorType with types 1 current (0.1 A), 4 voltage (V),
#: 5 power (W), 23 frequency (0.1 Hz).
SENSOR_ENTRY = (1, 3, 6, 1, 4, 1, 99999, 1, 2, 1)


def _sensor_walk(units: dict[int, dict[int, int]]) -> list[WalkRow]:
    rows = [WalkRow(SYS_OBJECT_ID, (1, 3, 6, 1, 4, 1, 99999))]
    for unit, values in units.items():
        for sensor, raw in values.items():
            rows.append(WalkRow((*SENSOR_ENTRY, 2, unit, sensor), 1))
            rows.append(WalkRow((*SENSOR_ENTRY, 3, unit, sensor), raw))
    return sorted(rows, key=lambda r: r.oid)


def test_suggest_sensor_type_table_from_its_arithmetic() -> None:
    """Two units whose sensor types 4, 1, 5 make V x I x power factor = P.

    Unit 1: 230 V x 52 x 0.1 A = 1196 VA against 1150 W, power factor 0.96; unit 2:
    231 V x 3.0 A = 693 VA against 660 W, 0.95. Type 23 (500 = 50.0 Hz) is the fourth
    reading a sensor row holds. The scale pair 0.1 A x W is proposed (0.01 A x 0.1 W fits
    as well and is named).
    """
    walk = _sensor_walk({1: {1: 52, 4: 230, 5: 1150, 23: 500}, 2: {1: 30, 4: 231, 5: 660, 23: 500}})
    toml, profile = _drafted(walk)
    column = ".".join(map(str, (*SENSOR_ENTRY, 3)))
    got = {(m.where["sensor"], m.quantity, m.scale, tuple(m.index)) for m in profile.metrics}
    assert got == {
        (5, "power_w", 1.0, ("i1", "sensor")),
        (4, "voltage_v", 1.0, ("i1", "sensor")),
        (1, "current_a", 0.1, ("i1", "sensor")),
    }
    assert {m.column for m in profile.metrics} == {column}
    assert "230 V x 5.2 A = 1196 VA against 1150 W, power factor 0.96" in toml
    assert "current x 0.01 with power x 0.1" in toml
    # One unit alone is too little: a dozen numbers in one row fit by chance too often.
    one = _sensor_walk({1: {1: 52, 4: 230, 5: 1150, 23: 500}})
    assert not [c for c in suggest_profile(one).candidates if c.sensor is not None]


def test_no_sensor_type_metrics_without_such_a_table() -> None:
    """Interface counters read across interfaces look like V, I, P rows: not drafted.

    An ifTable copied under an enterprise arc (1.3.6.1.4.1.99999.2.2.1.column.ifIndex)
    whose in/out octet columns hold 230, 52, 1150, 500 at interfaces 1-4: read with the
    interface as a sensor type they fit as 230 V x 5.2 A against 1150 W, but the table is
    not a column of sensors (its entry is not table.1 with the index under one column).
    Nor does any recording without such a table gain one.
    """
    counters = (1, 3, 6, 1, 4, 1, 99999, 2, 2, 1)
    walk = [WalkRow(SYS_OBJECT_ID, (1, 3, 6, 1, 4, 1, 99999))]
    walk += [WalkRow((*counters, 1, i), i) for i in range(1, 5)]  # ifIndex
    for column, octets in ((10, (230, 52, 1150, 500)), (16, (231, 30, 660, 500))):
        walk += [WalkRow((*counters, column, i), v) for i, v in enumerate(octets, 1)]
    draft = suggest_profile(walk)
    assert [c for c in draft.candidates if c.sensor is not None] == []
    assert "where =" not in draft.toml
    with_sensors = sorted(
        path.relative_to(SNMP_FIXTURES).with_suffix("").as_posix()
        for path in SNMP_FIXTURES.rglob("*.snmprec")
        if any(
            c.sensor is not None
            for c in suggest_profile(parse_snmprec(path.read_text(encoding="utf-8"))).candidates
        )
    )
    assert with_sensors == [PX3]
