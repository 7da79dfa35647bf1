"""Every shipped profile against its real walk, served by snmpsim over UDP, through the collector.

Expected values are the raw walk value x the scale the MIB states, written out
with the MIB object named, never copied from the code under test.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import polars as pl
import pytest

from agent.readings import Quality, validate_batch
from collectors.snmp.profiles import load_profiles
from tests.snmp.conftest import poll_once, value_of

# (walk, profile chosen by auto-detection, {point: expected}), each expected = raw x MIB scale.
CASES: list[tuple[str, str, dict[str, float]]] = [
    (
        "apc-8641",
        "apc-rpdu2",
        {
            "pdu.1.power": 121 * 10.0,  # rPDU2DeviceStatusPower = 121, hundredths of kW
            "pdu.1.energy": 19516 / 10,  # rPDU2DeviceStatusEnergy = 19516, tenths of kWh
            "pdu.1.apparent_power": 131 * 10.0,  # rPDU2DeviceStatusApparentPower, 0.01 kVA
            "pdu.1.power_factor": 94 / 100,  # rPDU2DeviceStatusPowerFactor, hundredths
            "phase.1.current": 65 / 10,  # rPDU2PhaseStatusCurrent, tenths of A
            "phase.1.voltage": 201.0,  # rPDU2PhaseStatusVoltage, V
            "phase.1.power": 122 * 10.0,  # rPDU2PhaseStatusPower, hundredths of kW
            "outlet.1.power": 163.0,  # rPDU2OutletMeteredStatusPower.1, W
            "outlet.1.energy": 3046 / 10,  # rPDU2OutletMeteredStatusEnergy.1, tenths of kWh
            "sys.uptime": 165528150 / 100,  # sysUpTime.0, TimeTicks (1/100 s)
        },
    ),
    (
        "apc_ap8959eu3",
        "apc-rpdu2",
        {
            "pdu.1.power": 27 * 10.0,  # rPDU2DeviceStatusPower = 27 (0.01 kW)
            "pdu.1.energy": 19677 / 10,  # rPDU2DeviceStatusEnergy (0.1 kWh)
            "phase.1.voltage": 231.0,  # rPDU2PhaseStatusVoltage (V)
            "phase.1.current": 13 / 10,  # rPDU2PhaseStatusCurrent (0.1 A)
        },
    ),
    (
        "apc-7902b",
        "apc-rpdu2",
        {
            # rPDU2DeviceStatusPower = -1 ("unsupported"): the legacy rPDUIdentDevicePowerWatts
            # (W) named for the same point in the profile is used instead.
            "pdu.1.power": 192.0,
            "phase.1.current": 16 / 10,  # rPDU2PhaseStatusCurrent (0.1 A)
        },
    ),
    (
        "apc_ap7900b",
        "apc-rpdu2",
        {"pdu.1.power": 312.0, "phase.1.current": 27 / 10},
    ),
    (
        "apc_smart1500",
        "apc-smart-ups",
        {
            "output.power": 169.0,  # upsAdvOutputActivePower, W
            "output.load": 176 / 10,  # upsHighPrecOutputLoad, tenths of %
            "output.voltage": 2476 / 10,  # upsHighPrecOutputVoltage, tenths of V
            "output.current": 10 / 10,  # upsHighPrecOutputCurrent, tenths of A
            "battery.charge": 1000 / 10,  # upsHighPrecBatteryCapacity, tenths of %
            "battery.runtime": 456000 / 100,  # upsAdvBatteryRunTimeRemaining, TimeTicks
            "input.frequency": 500 / 10,  # upsHighPrecInputFrequency, tenths of Hz
        },
    ),
    (
        "apc-inrow",
        "apc-inrow",
        {
            "cooling.output": 0 / 10,  # airIRRCUnitStatusCoolOutput, tenths of kW
            "rack_inlet.temperature": 214 / 10,  # airIRRCUnitStatusRackInletTempMetric, 0.1 C
            "supply_air.temperature": 219 / 10,  # airIRRCUnitStatusSupplyAirTempMetric
            "return_air.temperature": 238 / 10,  # airIRRCUnitStatusReturnAirTempMetric
            "entering_fluid.temperature": 130 / 10,  # ...EnteringFluidTemperatureMetric
        },
    ),
    (
        "eaton-93e-80",
        # sysObjectID is MGE's 1.3.6.1.4.1.705.1, but the card answers XUPS-MIB: chosen by
        # what the walk answers (UPS-MIB says the same: upsOutputPower.1 = 5100 W).
        "eaton-xups",
        {
            "output.1.power": 5100.0,  # XUPS-MIB xupsOutputWatts.1, W
            "output.1.voltage": 220.0,  # xupsOutputVoltage.1, V
            "output.1.current": 27.0,  # xupsOutputCurrent.1, A (upsOutputCurrent.1 = 270 x 0.1 A)
            "input.1.power": 0.0,  # xupsInputWatts.1, W
        },
    ),
    (
        "eaton-mgeups_93ps",
        "ups-mib",
        {"output.1.power": 400.0, "output.1.load": 7.0},  # upsOutputPower W, PercentLoad %
    ),
    (
        "eatonpdu_2",
        "eaton-epdu",
        {
            "unit.0.input.1.power": 1584.0,  # EATON-EPDU-MIB inputTotalWatts.0.1, W
            "unit.0.input.1.energy": 8185493 / 1000,  # inputTotalWh.0.1, Wh -> kWh
            "unit.0.input.1.line.1.current": 14108 / 1000,  # inputCurrent.0.1.1, mA
            "unit.0.input.1.line.1.voltage": 118450 / 1000,  # inputVoltage.0.1.1, mV
            "unit.0.outlet.1.power": 80.0,  # outletWatts.0.1, W
            "unit.0.outlet.1.energy": 785621 / 1000,  # outletWh.0.1, Wh
        },
    ),
    (
        "eatonups",
        "eaton-xups",
        {
            "output.1.power": 231.0,  # XUPS-MIB xupsOutputWatts.1, W
            "output.2.power": 944.0,
            "output.1.voltage": 230.0,  # xupsOutputVoltage.1, V
            "input.1.current": 5.0,  # xupsInputCurrent.1, A
            "output.frequency": 500 / 10,  # xupsOutputFrequency, 0.1 Hz
        },
    ),
    (
        "raritan-pdu_px3",
        "raritan-px",
        {
            # PDU2-MIB measurementsInletSensorValue.1.1.<type> x 10^-inletSensorDecimalDigits
            "pdu.1.inlet.1.current": 7467 / 10**3,  # rmsCurrent (1), digits 3
            "pdu.1.inlet.1.voltage": 229 / 10**0,  # rmsVoltage (4), digits 0
            "pdu.1.inlet.1.power": 1665 / 10**0,  # activePower (5), W
            "pdu.1.inlet.1.apparent_power": 1751 / 10**0,  # apparentPower (6), VA
            "pdu.1.inlet.1.power_factor": 98 / 10**2,  # powerFactor (7), digits 2
            "pdu.1.inlet.1.energy": 74057676 / 10**0 / 1000,  # activeEnergy (8), Wh -> kWh
            "pdu.1.inlet.1.frequency": 500 / 10**1,  # frequency (23), digits 1
        },
    ),
    (
        "sentry3_3phase",
        "sentry3",
        {
            "system.power": 279.0,  # Sentry3-MIB systemTotalPower, W
            "tower.1.infeed.1.power": 147.0,  # infeedPower.1.1, W
            "tower.1.infeed.1.current": 111 / 100,  # infeedLoadValue.1.1, hundredths of A
            "tower.1.infeed.1.voltage": 2300 / 10,  # infeedVoltage.1.1, tenths of V
        },
    ),
    (
        "sentry4",
        "sentry4",
        {
            "unit.1.cord.1.power": 1701.0,  # Sentry4-MIB st4InputCordActivePower.1.1, W
            "unit.1.cord.1.energy": 8937 / 10,  # st4InputCordEnergy.1.1, tenths of kWh
            "unit.2.cord.1.energy": 25659 / 10,
            "unit.1.cord.1.phase.1.voltage": 2079 / 10,  # st4PhaseVoltage.1.1.1, 0.1 V
            "unit.1.cord.1.phase.1.power": 415.0,  # st4PhaseActivePower.1.1.1, W
            "unit.1.cord.1.line.1.current": 560 / 100,  # st4LineCurrent.1.1.1, 0.01 A
        },
    ),
    (
        "vertiv-pdu_mg02e4w1",
        "vertiv-geist",
        {
            "pdu.1.power": 1017.0,  # VERTIV-V5-MIB pduTotalRealPower.1, W
            "pdu.1.energy": 8483906 / 1000,  # pduTotalEnergy.1, Wh -> kWh
            "pdu.1.apparent_power": 1067.0,  # pduTotalApparentPower.1, VA
            "phase.1.voltage": 2350 / 10,  # pduPhaseVoltage.1, tenths of V
            "breaker.1.current": 42 / 100,  # pduBreakerCurrent.1, hundredths of A
        },
    ),
    (
        "liebert_mph2rg",
        "liebert-gp-pdu",
        {
            "pdu.1.ps.1.power": 514.0,  # LIEBERT-GP-PDU-MIB lgpPduPsEntryPwrTotal.1.1, W
            "pdu.1.ps.1.energy": 20450 / 10,  # lgpPduPsEntryEnergyAccum.1.1, 0.1 kWh
            "pdu.1.ps.1.apparent_power": 551.0,  # lgpPduPsEntryApTotal.1.1, VA
            "pdu.1.ps.1.line.1.voltage": 2381 / 10,  # lgpPduPsLineEntryEpLNTenths, 0.1 V
            "pdu.1.ps.1.line.1.current": 242 / 100,  # lgpPduPsLineEntryEcHundredths, 0.01 A
            "pdu.1.branch.2.receptacle.6.power": 40.0,  # lgpPduRcpEntryPwrOut.1.2.6, W
        },
    ),
    (
        "janitza-umg96_umg96",
        "janitza-umg96",
        {
            "total.power": 10041.0,  # JANITZA-MIB-UMG96 p3, W
            "total.energy": 134812 / 10,  # wh3, 0.1 kWh
            "l1.energy": 45839 / 10,  # whL1, 0.1 kWh
            "l1.current": 16295 / 1000,  # iL1, mA
            "l1.voltage": 2297 / 10,  # uLN1, 100 mV
        },
    ),
    (
        "gude-epc_8031",
        "gude-epc",
        {
            "channel.1.power": 18.0,  # GUDEADS-EPC8031-MIB epc8031PowerActive.1, W
            "channel.1.energy": 1109596 / 1000,  # epc8031AbsEnergyActive.1, Wh -> kWh
            "channel.1.current": 186 / 1000,  # epc8031Current.1, mA
            "channel.1.voltage": 230.0,  # epc8031Voltage.1, V
            "channel.1.frequency": 4999 / 100,  # epc8031Frequency.1, 0.01 Hz
            "channel.1.power_factor": 424 / 1000,  # epc8031PowerFactor.1, 0.001
        },
    ),
]


@pytest.mark.parametrize(("walk", "profile", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_profile_against_real_walk(sim, walk, profile, expected) -> None:
    frame, collector = await poll_once(sim, walk)
    state = collector.states[walk]
    assert state.poller is not None
    assert state.poller.plan.profile.name == profile
    validate_batch(frame)  # the frame is a valid reading batch
    assert set(frame["device"].unique()) == {walk}
    assert (frame["quality"] == int(Quality.RECEIVE_TIME)).all()
    for point, value in expected.items():
        assert value_of(frame, point) == pytest.approx(value, rel=1e-12), point
    # One reading per point: alternatives for the same point never both appear.
    assert frame["point"].n_unique() == frame.height


def test_every_shipped_profile_has_a_walk_test() -> None:
    # liebert-gp-power: Web485 walk in test_bad_data.py; apc-rpdu: named in a test below.
    tested = {c[1] for c in CASES} | {"liebert-gp-power", "apc-rpdu"}
    # ... and the profiles the coverage table (test_coverage.py) expects auto-detection to pick.
    table = tomllib.loads((Path(__file__).with_name("coverage.toml")).read_text("utf-8"))
    tested |= {r["profile"].split("+")[0] for r in table["recordings"].values() if r["profile"]}
    assert set(load_profiles()) == tested


async def test_outlet_count_matches_the_walk(sim) -> None:
    """AP8641 meters 24 outlets (rPDU2OutletMeteredStatusTable has 24 rows)."""
    frame, _ = await poll_once(sim, "apc-8641")
    outlets = frame.filter(
        pl.col("point").str.starts_with("outlet.") & pl.col("point").str.ends_with(".power")
    )
    assert outlets.height == 24


async def test_legacy_rpdu_profile_when_named(sim) -> None:
    """apc-rpdu (legacy rPDU group) on the AP7902B walk, chosen in the device config."""
    frame, collector = await poll_once(sim, "apc-7902b", profile="apc-rpdu")
    assert collector.states["apc-7902b"].poller.plan.profile.name == "apc-rpdu"
    assert value_of(frame, "pdu.1.power") == 192.0  # PowerNet-MIB rPDUIdentDevicePowerWatts, W
    assert value_of(frame, "pdu.1.voltage") == 120.0  # rPDUIdentDeviceLinetoLineVoltage, V
    assert value_of(frame, "load.1.current") == 16 / 10  # rPDULoadStatusLoad.1, tenths of A
    assert value_of(frame, "load.3.current") == 11 / 10  # rPDULoadStatusLoad.3
