"""Conformance: ``--profile auto`` over every SNMP recording in the test data, against a data table.

One snmpsim (the session's ``sim``) serves every recording in ``tests/fixtures/snmp``
and its ``coverage/`` folder, one community per recording. Each is detected and
polled over real UDP, concurrently, once per module. ``tests/snmp/coverage.toml``
states per recording the profile that must be chosen (``""`` = none may claim it),
whether the device reports power / has an energy counter, and expected readings
written as MIB arithmetic beside them (raw value x the MIB's unit), and which of them
are sums the profile forms (flagged ``DERIVED``). The coverage figures the issue asks
for are computed from the same table and printed; the ``synthetic/`` walks (written
from RFC 3433's arithmetic, not recordings) are checked but left out of the figures.
"""

from __future__ import annotations

import asyncio
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest
from pydantic import ValidationError

from agent.readings import Quality, ReadingBuffer
from collectors.snmp.client import UdpDispatcher
from collectors.snmp.detect import Detection, detect_plan, implausible
from collectors.snmp.poller import DevicePlan, Poller
from collectors.snmp.profiles import DeviceFacts, Metric, load_profiles, rank_profiles
from tests.servers.snmp import SnmpsimServer
from tests.snmp.conftest import SNMP_FIXTURES
from tests.snmp.helpers import poll_plan, sim_session

TABLE = Path(__file__).with_name("coverage.toml")


@dataclass
class Outcome:
    """What auto-detection and one poll gave for one recording."""

    detection: Detection
    readings: dict[str, float] = field(default_factory=dict)
    qualities: dict[str, int] = field(default_factory=dict)

    @property
    def profile(self) -> str:
        plan = self.detection.plan
        return plan.describe() if plan else ""


def _recordings() -> list[str]:
    top = sorted(p.stem for p in SNMP_FIXTURES.glob("*.snmprec"))
    more = [
        f"{folder}/{p.stem}"
        for folder in ("coverage", "synthetic")
        for p in sorted((SNMP_FIXTURES / folder).glob("*.snmprec"))
    ]
    return top + more


def _table() -> dict[str, dict[str, object]]:
    return tomllib.loads(TABLE.read_text(encoding="utf-8"))["recordings"]  # type: ignore[no-any-return]


async def _probe(dispatcher: UdpDispatcher, port: int, name: str) -> Outcome:
    session = sim_session(dispatcher, port, name)
    detection = await detect_plan(session, load_profiles().values())
    outcome = Outcome(detection)
    if detection.plan is not None:
        buffer = ReadingBuffer()
        await Poller(name, session, detection.plan).poll(buffer)
        frame = buffer.take()
        outcome.readings = dict(zip(frame["point"], frame["value"], strict=True))
        outcome.qualities = dict(zip(frame["point"], frame["quality"], strict=True))
    return outcome


@pytest.fixture(scope="module")
def outcomes(sim: SnmpsimServer) -> dict[str, Outcome]:
    """Every recording detected and polled once (concurrently, one UDP socket)."""

    async def run() -> dict[str, Outcome]:
        dispatcher = UdpDispatcher()
        await dispatcher.open()
        try:
            names = _recordings()
            # snmpsim answers one request at a time: a few in flight keep it busy
            # without piling up retries.
            limit = asyncio.Semaphore(8)

            async def one(name: str) -> Outcome:
                async with limit:
                    return await _probe(dispatcher, sim.port, name)

            found = await asyncio.gather(*(one(n) for n in names))
            return dict(zip(names, found, strict=True))
        finally:
            dispatcher.close()

    return asyncio.run(run())


def test_every_recording_is_in_the_table() -> None:
    assert sorted(_table()) == sorted(_recordings())


def test_profile_chosen_and_values_read(outcomes: dict[str, Outcome]) -> None:
    """Per recording: the profile chosen (or none) and each expected reading, all at once."""
    problems = []
    for name, row in sorted(_table().items()):
        got = outcomes[name]
        if got.profile != row["profile"]:
            why = got.detection.explain()
            problems.append(
                f"{name}: profile {got.profile or 'none'!r}, expected {row['profile'] or 'none'!r}"
                + (f" (refused: {why})" if why else "")
            )
            continue
        derived = set(row.get("derived", []))  # type: ignore[call-overload]
        for point, expected in dict(row.get("expect", {})).items():  # type: ignore[call-overload]
            value = got.readings.get(point)
            if value is None or value != pytest.approx(expected, rel=1e-9):
                problems.append(f"{name}: {point} = {value}, expected {expected}")
                continue
            # A profile's sum is flagged DERIVED; a value the device reports is not.
            flagged = bool(got.qualities[point] & Quality.DERIVED)
            if flagged != (point in derived):
                problems.append(f"{name}: {point} quality {got.qualities[point]}")
        if derived - set(dict(row.get("expect", {}))):  # type: ignore[call-overload]
            problems.append(f"{name}: 'derived' names points without an expected value")
    assert not problems, "\n".join(problems)


def test_coverage_figures(outcomes: dict[str, Outcome], capsys: pytest.CaptureFixture[str]) -> None:
    """The figures the project measures itself by, printed, with the issue's targets asserted.

    Power read right: the table's profile was chosen and every expected power reading
    matches; likewise for energy. Counted over the recordings whose device reports power
    (and is not a stub), and over those with an energy register.
    """
    table = {n: r for n, r in _table().items() if not n.startswith("synthetic/")}

    def right(name: str, suffix: str) -> bool:
        got, row = outcomes[name], table[name]
        expected = {
            k: v
            for k, v in dict(row.get("expect", {})).items()  # type: ignore[call-overload]
            if k.endswith(suffix) and not k.endswith("apparent_" + suffix)
        }
        return (
            got.profile == row["profile"] != ""
            and bool(expected)
            and all(got.readings.get(k) == pytest.approx(v, rel=1e-9) for k, v in expected.items())
        )

    power = [n for n, r in table.items() if r["reports_power"] and not r.get("stub", False)]
    energy = [n for n, r in table.items() if r["has_energy"]]
    power_right = [n for n in power if right(n, "power")]
    energy_right = [n for n in energy if right(n, "energy")]
    detected = [n for n in table if outcomes[n].profile]
    with capsys.disabled():
        print(
            f"\nSNMP coverage: {len(table)} recordings, {len(detected)} detected; power read "
            f"right {len(power_right)}/{len(power)} ({100 * len(power_right) / len(power):.0f} %)"
            f"; energy read right {len(energy_right)}/{len(energy)}; power not read: "
            f"{sorted(set(power) - set(power_right))}"
        )
    assert len(power_right) >= 0.9 * len(power)  # the target
    assert energy_right == energy  # every recording with an energy register gives energy


def test_janitza_umg604_is_not_claimed_by_the_umg96_profile(
    outcomes: dict[str, Outcome], sim: SnmpsimServer
) -> None:
    """The UMG 604 answers under the UMG 96 sysObjectID prefix, with another OID layout.

    Read with the UMG 96 layout, phase L1 is uLN1 .1.1.0 = 2299 x 0.1 V = 229.9 V, "iL1"
    .1.7.0 = 3987 x 1 mA = 3.987 A (really uL3L1, 398.7 V) and "pL1" .1.13.0 = 44088 W:
    P / (V x I) = 44088 / 916.6 = 48, not a power factor, so the UMG 96 profile is refused.
    With the UMG 604 layout (JANITZA-MIB): iL1 .1.8.0 = 218542 mA = 218.542 A, pL1 .1.12.0 =
    46363 W, 46363 / (229.9 x 218.542) = 0.923 (cosPL1 .1.24.0 = 923 x 0.001: the same).
    """
    got = outcomes["coverage/janitza"]
    assert got.profile == "janitza-umg604"
    assert got.readings["l1.current"] == pytest.approx(218542 / 1000)
    assert got.readings["total.power"] == 137982.0  # p3 .2.1.0, W
    assert got.readings["l1.power"] + got.readings["l2.power"] + got.readings["l3.power"] == (
        pytest.approx(137982, abs=3)  # 46363 + 44088 + 47530 = 137981: p3 is the same sum
    )
    umg96 = load_profiles()["janitza-umg96"]
    problems = _trial(sim, "coverage/janitza", DevicePlan(umg96))
    assert problems and "48" in problems[0], problems


def _trial(sim: SnmpsimServer, name: str, plan: DevicePlan) -> list[str]:
    return implausible(_poll(sim, name, plan))


def _poll(sim: SnmpsimServer, name: str, plan: DevicePlan) -> pl.DataFrame:
    return asyncio.run(poll_plan(sim.port, name, plan))


def test_deltaups_voltages_in_tenths(outcomes: dict[str, Outcome], sim: SnmpsimServer) -> None:
    """Delta Mini-SNMP: upsOutputVoltage.1 = 2302 is 230.2 V (0.1 V), not 2302 V.

    upsOutputCurrent.1 = 94 x 0.1 A = 9.4 A; upsOutputPower.1 = 2000 W. Read as volts,
    2000 / (2302 x 9.4) = 0.092: refused. In 0.1 V, 2000 / (230.2 x 9.4) = 0.924.
    """
    got = outcomes["coverage/deltaups_mini-snmp"]
    assert got.profile == "ups-mib+delta_mini_snmp"
    assert got.readings["output.1.voltage"] == pytest.approx(2302 / 10)
    assert got.readings["input.1.voltage"] == pytest.approx(2313 / 10)  # upsInputVoltage.1
    assert got.readings["output.1.power"] == 2000.0
    bare = _trial(sim, "coverage/deltaups_mini-snmp", DevicePlan(load_profiles()["ups-mib"]))
    assert bare and "0.092" in bare[0], bare


def test_huawei_ups2000_output_power_in_kw(
    outcomes: dict[str, Outcome], sim: SnmpsimServer
) -> None:
    """Huawei UPS2000: upsOutputPower.1 = 1 is 1 kW (the device's unit), so 1000 W.

    upsOutputVoltage.1 = 230 V x upsOutputCurrent.1 = 72 x 0.1 A = 1656 VA, and
    upsOutputPercentLoad.1 = 27 % of its 6 kVA = 1620 VA: 1 W would be a power factor of
    0.0006 (refused), 1000 W is 0.60. A 1 kW step is coarse, but it is what it reports.
    """
    got = outcomes["huaweiups_ups2000"]
    assert got.profile == "ups-mib+huawei_ups2000"
    assert got.readings["output.1.power"] == 1 * 1000.0
    bare = _trial(sim, "huaweiups_ups2000", DevicePlan(load_profiles()["ups-mib"]))
    assert bare and "0.000604" in bare[0], bare


def test_unmatched_device_says_so(outcomes: dict[str, Outcome]) -> None:
    """A device no profile fits gets no plan, and refused candidates say why."""
    for name, row in _table().items():
        if row["profile"] == "":
            assert outcomes[name].detection.plan is None, name


def test_implausible_reading_groups() -> None:
    """The check itself: P / (V x I) outside 0.1..1.8 is refused, small or idle groups pass."""
    frame = pl.DataFrame(
        {
            "point": ["a.power", "a.voltage", "a.current", "b.power", "b.voltage", "b.current"],
            "quantity": ["power_w", "voltage_v", "current_a"] * 2,
            "value": [2000.0, 2302.0, 9.4, 0.0, 230.0, 5.0],
        }
    )
    problems = implausible(frame)
    assert len(problems) == 1 and problems[0].startswith("a:")  # b is idle: P = 0


def test_phase_sum_is_flagged_derived(outcomes: dict[str, Outcome], sim: SnmpsimServer) -> None:
    """Vertiv MN03: no pduTotal row, so the profile sums the phases and flags the sum DERIVED.

    pduPhaseRealPower .12.1..3 = 1464 + 1477 + 1458 = 4399 W; pduPhaseEnergy .15.1..3 =
    (5207918 + 5284954 + 5191126) Wh x 0.001 = 15683.998 kWh. The phase readings are the
    device's own values: receive time only, not DERIVED.
    """
    got = outcomes["coverage/vertiv-pdu_mn03edr1"]
    assert got.readings["total.power"] == 1464 + 1477 + 1458 == 4399
    assert got.readings["total.energy"] == pytest.approx((5207918 + 5284954 + 5191126) / 1000)
    derived = int(Quality.RECEIVE_TIME | Quality.DERIVED)
    assert got.qualities["total.power"] == got.qualities["total.energy"] == derived
    assert got.qualities["phase.2.power"] == int(Quality.RECEIVE_TIME)
    # A phase without a value leaves the sum out (a partial sum would understate the total):
    # the same profile with phase 2's 1477 W declared a sentinel reads no total.power.
    profile = load_profiles()["vertiv-geist-phases"]
    metrics = [
        m.model_copy(update={"sentinels": [1477]}) if m.name == "pduPhaseRealPower-sum" else m
        for m in profile.metrics
    ]
    frame = _poll(
        sim,
        "coverage/vertiv-pdu_mn03edr1",
        DevicePlan(profile.model_copy(update={"metrics": metrics})),
    )
    points = set(frame["point"].to_list())
    assert "phase.2.power" in points and "total.energy" in points
    assert "total.power" not in points


def test_entity_sensor_fallback(outcomes: dict[str, Outcome]) -> None:
    """ENTITY-SENSOR-MIB rows: type filter, SI scale and precision per row, oper status.

    Only watts(6), amperes(5), voltsAC(3) and voltsDC(4) rows are read; sensor 13 (watts,
    entPhySensorOperStatus unavailable(2)) and sensor 31 (celsius) give nothing. A walk
    without a watts row is refused: the fall-back is a power source or nothing.
    """
    got = outcomes["synthetic/entity-sensor"]
    assert got.profile == "entity-sensor"
    assert sorted(p for p in got.readings if p != "sys.uptime") == [
        "sensor.11.power",
        "sensor.12.power",
        "sensor.14.power",
        "sensor.15.power",
        "sensor.21.current",
        "sensor.22.voltage",
        "sensor.23.dc_voltage",
    ]
    assert got.readings["sensor.12.power"] == 153 * 10 ** (3 * (10 - 9)) / 10**2  # kilo, 2 places
    # milli, 1 place: 10^(3 x (8 - 9)) x 10^-1 = 10^-4, applied as one division (exact)
    assert got.readings["sensor.15.power"] == 123456 / 10**4 == 12.3456
    refused = outcomes["synthetic/entity-sensor-no-watts"].detection
    assert refused.plan is None
    assert refused.refused == {"entity-sensor": "reads no power_w"}
    # Ranked below every vendor profile and UPS-MIB (priority 0).
    priorities = {p.name: p.priority for p in load_profiles().values()}
    assert priorities.pop("entity-sensor") < min(priorities.values())


@pytest.mark.parametrize(
    ("profile", "answered"),
    [
        ("apc-smart-ups", "1.3.6.1.4.1.318.1.1.1.4.3"),  # PowerNet-MIB upsHighPrecOutput
        ("apc-rpdu2", "1.3.6.1.4.1.318.1.1.26.4.3.1.5"),  # rPDU2DeviceStatusPower
        ("apc-epdu", "1.3.6.1.4.1.318.1.1.30.4.2.1.6"),  # ePDUPhaseStatusActivePower
        ("liebert-gp-power", "1.3.6.1.4.1.476.1.42.3.5.2.2.1.8"),  # lgpPwrMeasurementPoint...
        ("liebert-gp-pdu", "1.3.6.1.4.1.476.1.42.3.8.30.20.1.65"),  # lgpPduPsEntryPwrTotal
        ("eaton-xups", "1.3.6.1.4.1.534.1.4.4.1.4"),  # XUPS-MIB xupsOutputWatts
        ("entity-sensor", "1.3.6.1.2.1.99.1.1.1.1"),  # entPhySensorType
    ],
)
def test_generic_tables_chosen_by_what_the_walk_answers(profile: str, answered: str) -> None:
    """A card with a foreign sysObjectID that answers a vendor's generic table gets its profile.

    (The Eaton 93E recording is the real case: sysObjectID 1.3.6.1.4.1.705.1, XUPS-MIB.)
    """
    facts = DeviceFacts(sys_object_id="1.3.6.1.4.1.8072.3.2.10", present={answered})
    ranked = [p.name for p in rank_profiles(load_profiles().values(), facts)]
    assert ranked == [profile]


def test_cet_phase_current_in_tenths(outcomes: dict[str, Outcome], sim: SnmpsimServer) -> None:
    """CET TSI: tsiPhaseIout.1 = 87 is 8.7 A (0.1 A), not 87 A (issue 24: a current 10x high).

    1900 W / (230.1 V x 8.7 A) = 0.95. Read as amperes, 1900 / (230.1 x 87) = 0.0949 at
    20,019 VA: refused as a unit slip, so the 10x reading cannot be chosen.
    """
    got = outcomes["synthetic/cet-tsi"]
    assert got.readings["phase.1.current"] == 87 / 10
    profile = load_profiles()["cet-tsi"]
    metrics = [
        m.model_copy(update={"scale": 1.0}) if m.name == "tsiPhaseIout" else m
        for m in profile.metrics
    ]
    problems = _trial(
        sim, "synthetic/cet-tsi", DevicePlan(profile.model_copy(update={"metrics": metrics}))
    )
    assert problems and "0.0949" in problems[0], problems


def test_a_sum_must_leave_out_what_it_sums_over() -> None:
    """`aggregate = "sum"` over a point that names every index part would sum single rows."""
    base = {"name": "m", "column": "1.3.6.1.4.1.1.1", "quantity": "power_w", "aggregate": "sum"}
    with pytest.raises(ValidationError, match="leaves out"):
        Metric.model_validate({**base, "index": ["phase"], "point": "phase.{phase}.power"})
    with pytest.raises(ValidationError, match="need 'column'"):
        Metric.model_validate({**base, "column": None, "oid": "1.3.6.1.4.1.1.1.0", "point": "p"})
    total = Metric.model_validate(
        {**base, "index": ["unit", "phase"], "point": "unit.{unit}.power"}
    )
    assert total.aggregate == "sum"
