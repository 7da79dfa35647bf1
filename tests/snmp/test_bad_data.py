"""The bad-data walks: each states the behaviour chosen for a device that breaks its MIB."""

from __future__ import annotations

import polars as pl
import pytest

from tests.servers.snmp import snmpsim
from tests.snmp.conftest import SNMP_FIXTURES, poll_once, value_of


def points(frame: pl.DataFrame) -> set[str]:
    return set(frame["point"].to_list())


async def test_negative_ups_output_power_is_journalled_as_sent(sim) -> None:
    """Generex CS141: upsOutputPower.1 = -4 and .3 = -26 although UPS-MIB's range is 0..2^31-1.

    Chosen: the collector records what the device said (W, scale 1); rejecting and
    counting implausible negative power is the aggregator's rule (docs/pue.md), and the
    journal keeps the evidence.
    """
    frame, _ = await poll_once(sim, "generex-ups_cs141")
    assert value_of(frame, "output.1.power") == -4.0
    assert value_of(frame, "output.3.power") == -26.0
    assert value_of(frame, "output.2.power") == 469.0


async def test_65535_sentinels_produce_no_reading(sim) -> None:
    """Socomec NetVision: upsInputTruePower = 65535, upsInputCurrent = 655350: "not measured".

    Chosen: the socomec_netvision quirk (matched by the Socomec enterprise subtree
    1.3.6.1.4.1.4555.1) declares them sentinels: no reading, never a 65 kW spike or a zero.
    """
    frame, collector = await poll_once(sim, "netvision-rfc")
    assert collector.states["netvision-rfc"].poller.plan.quirks == ["socomec_netvision"]
    assert "input.1.power" not in points(frame)
    assert "input.1.current" not in points(frame)
    assert "battery.runtime" not in points(frame)  # upsEstimatedMinutesRemaining = 65535
    assert value_of(frame, "output.1.power") == 200.0  # upsOutputPower.1, W (real value kept)
    assert value_of(frame, "input.1.voltage") == 234.0  # upsInputVoltage.1, V


async def test_65535_is_a_value_without_the_quirk(sim) -> None:
    """Without the quirk 65535 W is a legal UPS-MIB value, so it is journalled: the
    sentinel is the device's dialect, not a rule of the MIB."""
    frame, _ = await poll_once(sim, "netvision-rfc", profile="ups-mib", quirks=[])
    assert value_of(frame, "input.1.power") == 65535.0


async def test_minus_one_unsupported_produces_no_reading(sim) -> None:
    """APC AP7902B: rPDU2DeviceStatusEnergy, rPDU2PhaseStatusPower/Voltage = -1 ("unsupported").

    Chosen: no reading (not a zero, not -0.1 kWh); the legacy rPDUIdentDevicePowerWatts
    fills pdu.1.power since the profile names it as the alternative for that point.
    """
    frame, _ = await poll_once(sim, "apc-7902b")
    assert not points(frame) & {"pdu.1.energy", "phase.1.power", "phase.1.voltage"}
    assert value_of(frame, "pdu.1.power") == 192.0
    assert (frame["value"] >= 0).all()


async def test_sentry3_negative_means_not_available(sim) -> None:
    """Sentry3-MIB: infeedPower/infeedVoltage of infeed 1.4 are -1 ("negative = n/a" in the MIB)."""
    frame, _ = await poll_once(sim, "sentry3_3phase")
    assert "tower.1.infeed.4.power" not in points(frame)
    assert "tower.1.infeed.4.voltage" not in points(frame)
    assert value_of(frame, "tower.1.infeed.4.current") == 212 / 100  # infeedLoadValue.1.4


async def test_trailing_zero_index_with_quirk(sim) -> None:
    """MGE Galaxy 7000 answers upsOutputPercentLoad.1.0 instead of .1 (UPS-MIB index is one arc).

    Chosen: the mge_galaxy quirk (sysObjectID 1.3.6.1.4.1.705.1.2) strips the extra .0,
    and scales the voltages it reports in 0.1 V (upsOutputVoltage.1.0 = 2303 -> 230.3 V).
    """
    frame, collector = await poll_once(sim, "apc-mgeups_galaxy7000")
    assert collector.states["apc-mgeups_galaxy7000"].poller.plan.quirks == ["mge_galaxy"]
    assert value_of(frame, "output.1.load") == 9.0  # upsOutputPercentLoad.1.0, %
    assert value_of(frame, "output.1.voltage") == 2303 / 10
    assert value_of(frame, "input.1.voltage") == 2363 / 10


async def test_trailing_zero_index_without_quirk_is_dropped(sim) -> None:
    """Without the quirk the rows do not fit the profile's index: no reading, never a
    point named after a malformed index."""
    frame, _ = await poll_once(sim, "apc-mgeups_galaxy7000", profile="ups-mib", quirks=[])
    assert not any(p.startswith(("output.", "input.")) and p.count(".") > 2 for p in points(frame))
    assert "output.1.load" not in points(frame)


async def test_liebert_web485_kilo_units(sim) -> None:
    """Liebert FPC via Web485: lgpPwrMeasurementPointTruePower.2 = 138 at ~140 kVA (MIB says W).

    Chosen: the liebert_web485_kilo_units quirk (agent part number OCWEB-ADPT) reads kW
    and kVA (x1000), and does not read lgpPwrMeasurementPointWattHours (12768), whose unit
    cannot be told: no energy reading beats a wrong one by a factor of 1000.
    """
    frame, collector = await poll_once(sim, "liebert_web485")
    plan = collector.states["liebert_web485"].poller.plan
    assert plan.profile.name == "liebert-gp-power"
    assert plan.quirks == ["liebert_web485_kilo_units"]
    assert value_of(frame, "mp.2.power") == 138 * 1000.0
    assert value_of(frame, "mp.2.apparent_power") == 139 * 1000.0
    assert "mp.2.energy" not in points(frame)
    assert value_of(frame, "mp.2.line.1.current") == 408.0  # lgpPwrLineMeasurementCurrent, A
    assert value_of(frame, "mp.1.line.1.voltage_ll") == 479.0  # ...VoltsLL, V


async def test_huawei_ups2000_reports_kw(sim) -> None:
    """Huawei UPS2000: upsOutputPower.1 = 1 at 230 V x 7.2 A: kW, not the MIB's W."""
    frame, collector = await poll_once(sim, "huaweiups_ups2000")
    assert collector.states["huaweiups_ups2000"].poller.plan.quirks == ["huawei_ups2000"]
    assert value_of(frame, "output.1.power") == 1 * 1000.0
    assert value_of(frame, "output.1.current") == 72 / 10  # upsOutputCurrent, 0.1 A (conformant)
    assert value_of(frame, "input.1.frequency") == 500 / 10  # upsInputFrequency, 0.1 Hz


async def test_huawei_ups5000_scaling(sim) -> None:
    """Huawei UPS5000 (GSE200M): upsOutputPower 34 = 3.4 kW (0.1 kW), upsOutputVoltage 2199 =
    219.9 V (0.1 V), upsInputFrequency 5000 = 50.00 Hz (0.01 Hz); upsOutputCurrent 183 keeps
    the MIB's 0.1 A (18.3 A; 219.9 V x 18.3 A = 4.0 kVA is consistent with 3.4 kW)."""
    frame, collector = await poll_once(sim, "huawei-gse200m")
    assert collector.states["huawei-gse200m"].poller.plan.quirks == ["huawei_ups5000"]
    assert value_of(frame, "output.1.power") == 34 * 100.0
    assert value_of(frame, "output.1.voltage") == 2199 / 10
    assert value_of(frame, "input.1.voltage") == 2369 / 10
    assert value_of(frame, "input.1.frequency") == 5000 / 100
    assert value_of(frame, "output.frequency") == 4999 / 100
    assert value_of(frame, "output.1.current") == 183 / 10
    # upsEstimatedChargeRemaining = -1 and upsEstimatedMinutesRemaining = -1: unknown.
    assert not points(frame) & {"battery.charge", "battery.runtime"}


@pytest.mark.parametrize("walk", ["huawei-gse200m", "eaton-93e-80"])
async def test_comment_line_walks_are_served(sim, walk) -> None:
    """Two snmpsim-data walks start with a '#' line; they still poll (snmpsim skips it)."""
    frame, _ = await poll_once(sim, walk)
    assert frame.height > 5


@pytest.mark.parametrize("text", ["1e308", "9" * 400, "1e309", "-inf", "nan", "NaN", "0x1p1023"])
async def test_hostile_text_values_through_snmpsim_are_bad_values(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    """liebert_web485 with lgpPwrMeasurementPointTruePower.2 sent as text (issue 22).

    The kilo-units quirk multiplies it by 1000, so even a finite "1e308" overflows; every
    case is one bad value, never an exception, and the other readings still arrive.
    """
    folder = tmp_path_factory.mktemp("hostile-walk")
    walk = (SNMP_FIXTURES / "liebert_web485.snmprec").read_text(encoding="utf-8")
    power = "1.3.6.1.4.1.476.1.42.3.5.2.2.1.8.2|2|138"
    assert power in walk
    (folder / "liebert_web485.snmprec").write_text(
        walk.replace(power, f"1.3.6.1.4.1.476.1.42.3.5.2.2.1.8.2|4|{text}"), encoding="utf-8"
    )
    with snmpsim(folder) as server:
        frame, collector = await poll_once(server, "liebert_web485")
    assert "mp.2.power" not in points(frame)
    assert value_of(frame, "mp.2.apparent_power") == 139 * 1000.0
    assert value_of(frame, "mp.2.line.1.current") == 408.0
    assert (frame["value"].is_finite()).all()
    state = collector.states["liebert_web485"]
    assert state.failed_polls == 0
