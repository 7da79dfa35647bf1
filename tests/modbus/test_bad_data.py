"""Bad data and misbehaving units: each test states the behaviour chosen.

One pymodbus server plays a gateway with an Eastron SDM630 (float32, input registers)
at several unit ids, each broken in one way; unit 99 is not on its line at all.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator

import polars as pl
import pytest
import structlog

from agent import metrics
from agent.plugins import CollectorContext
from agent.readings import Quality
from collectors.modbus.maps import load_maps
from tests.modbus.conftest import Capture, make, poll_all_once, run_until, tcp_options, value_of
from tests.servers.modbus import ModbusServer, Unit, map_registers

SDM630 = load_maps()["eastron-sdm630"]
ABB = load_maps()["abb-b23"]
GOOD = {"l1.voltage": 230.25, "total.power": 8123.5, "frequency": 50.0, "import.energy": 1520.5}


def sdm(**raws: float) -> dict[int, int]:
    return map_registers(SDM630, {**GOOD, **raws})


@pytest.fixture(scope="module")
def server() -> Iterator[ModbusServer]:
    abb = map_registers(ABB, {"l1.voltage": 2301})
    abb[0x5B14], abb[0x5B15] = 0xFFFF, 0xFFFF  # total.power: "not available" in ABB's manual
    units = {
        1: Unit(sdm()),
        2: Unit(sdm(**{"l1.voltage": math.nan, "total.power": math.inf})),
        3: Unit(sdm(**{"import.energy": 0.0})),
        4: Unit(sdm(frequency=120.0, **{"l1.voltage": 2301.0})),
        5: Unit(sdm(), exception=6),
        6: Unit(sdm(), answer_as=16),
        7: Unit(sdm(), refuse_holes=True),
        8: Unit(abb),
    }
    # Unit 3: import.energy registers both 0xFFFF ("not available", also a float32 NaN).
    units[3].registers[0x48] = units[3].registers[0x49] = 0xFFFF
    with ModbusServer(units) as s:
        yield s


def device(name: str, unit: int, map_name: str = "eastron-sdm630") -> dict[str, object]:
    return {"name": name, "unit": unit, "map": map_name}


def rejected(collector: str) -> float:
    return metrics.READINGS_REJECTED.labels(collector, "modbus_bad_value")._value.get()


async def test_nan_and_infinite_floats_give_no_reading_and_are_counted(server) -> None:
    """Chosen: a float32 NaN or ±inf is not a measurement; no reading, counted as rejected."""
    collector = make(tcp_options(server.port, [device("m2", 2)]), name="modbus-nan")
    frame = await poll_all_once(collector)
    points = set(frame["point"])
    assert "l1.voltage" not in points and "total.power" not in points
    assert value_of(frame, "m2", "frequency") == 50.0
    assert rejected("modbus-nan") == 2


async def test_all_ones_registers_mean_not_available(server) -> None:
    """0xFFFF 0xFFFF is "not available" (ABB documents it; on float32 it is also a NaN):
    no reading, never 4294967295 x 0.01 W."""
    collector = make(
        tcp_options(server.port, [device("m3", 3), device("abb", 8, "abb-b23")]),
        name="modbus-ones",
    )
    frame = await poll_all_once(collector)
    assert "import.energy" not in set(frame.filter(pl.col("device") == "m3")["point"])
    assert "total.power" not in set(frame.filter(pl.col("device") == "abb")["point"])
    assert value_of(frame, "abb", "l1.voltage") == 2301 / 10
    assert rejected("modbus-ones") == 0  # a sentinel is not a bad value


async def test_out_of_range_values_are_journalled_flagged_suspect(server) -> None:
    """120 Hz and 2301 V are outside the map's physical ranges (45..65 Hz, 0..500 V).

    Chosen: journalled as read with ``DEVICE_SUSPECT`` (the aggregator and an auditor see
    the evidence), while in-range values of the same poll stay plain receive-time readings.
    """
    collector = make(tcp_options(server.port, [device("m4", 4)]))
    frame = await poll_all_once(collector)
    suspect = int(Quality.RECEIVE_TIME | Quality.DEVICE_SUSPECT)
    row = frame.filter(pl.col("point") == "frequency").row(0, named=True)
    assert (row["value"], row["quality"]) == (120.0, suspect)
    assert frame.filter(pl.col("point") == "l1.voltage")["quality"][0] == suspect
    assert frame.filter(pl.col("point") == "total.power")["quality"][0] == Quality.RECEIVE_TIME


async def test_exception_code_counted_by_reason_logged_once_then_recovery(server) -> None:
    """Unit 5 answers exception 0x06 (server device busy) to every read, then recovers."""
    options = tcp_options(server.port, [device("m5", 5)], interval_s=0.05, backoff_max_s=0.05)
    collector = make(options, name="modbus-exc")
    with structlog.testing.capture_logs() as events:
        await run_until(collector, lambda c: c.states["m5"].finished >= 3)
        server.units[5].exception = None
        try:
            await run_until(collector, lambda c: not c.states["m5"].failing)
        finally:
            server.units[5].exception = 6
    state = collector.states["m5"]
    assert state.failures["exception_server_device_busy"] >= 3
    failure = metrics.POLL_FAILURES.labels("modbus-exc", "m5", "exception_server_device_busy")
    assert failure._value.get() >= 3
    names = [e["event"] for e in events if e.get("device") == "m5"]
    assert names.count("device failing") == 1
    assert names.count("device recovered") == 1
    [failing] = [e for e in events if e["event"] == "device failing"]
    assert "exception 0x06 (server_device_busy)" in failing["error"]


async def test_answer_from_another_unit_id_is_discarded(server) -> None:
    """Unit 6's answers come back as unit 16 (a gateway mix-up): never taken as unit 6's."""
    collector = make(tcp_options(server.port, [device("m6", 6)], timeout_s=0.3))
    frame = await poll_all_once(collector)
    assert frame.is_empty()
    assert collector.states["m6"].failures == {"wrong_unit": 1}


async def test_a_unit_refusing_read_through_holes_is_read_without_them(server) -> None:
    """Unit 7 answers exception 0x02 to reads touching unmapped registers.

    Chosen: the plan drops read-through for that unit (logged once) and the same poll
    succeeds: 16 values in 6 requests (the contiguous runs) instead of 3.
    """
    collector = make(tcp_options(server.port, [device("m7", 7)]))
    with structlog.testing.capture_logs() as events:
        frame = await poll_all_once(collector)
    assert value_of(frame, "m7", "import.energy") == 1520.5
    assert frame.height == len(SDM630.registers)
    assert len(collector.states["m7"].plan.blocks) == 6
    assert not collector.states["m7"].failures
    assert [e["event"] for e in events].count(
        "unit refuses reads across unmapped registers; reading without holes"
    ) == 1


async def test_a_silent_unit_holds_the_gateway_for_its_timeout_only(server) -> None:
    """Unit 99 is not behind the gateway (no answer); unit 1 shares the gateway.

    Each of unit 99's polls holds the bus for its 0.3 s timeout; unit 1 keeps its
    0.25 s cadence, and none of its polls waits longer than one such timeout plus its
    own request. Unit 99 is logged failing once although it fails every poll.
    """
    options = tcp_options(
        server.port,
        [device("m1", 1), device("dead", 99)],
        interval_s=0.25,
        timeout_s=0.3,
        backoff_max_s=0.3,
    )
    collector = make(options, name="modbus-dead")
    started = time.monotonic()
    with structlog.testing.capture_logs() as events:
        capture = await run_until(collector, lambda c: c.states["m1"].finished >= 6)
    elapsed = time.monotonic() - started
    m1, dead = collector.states["m1"], collector.states["dead"]
    assert m1.finished >= 6 and not m1.failures
    assert elapsed < 6 * 0.25 + 1.0
    assert m1.max_poll_s < 0.3 + 0.2
    assert dead.failures["timeout"] >= 2, dead.failures
    assert [e["event"] for e in events if e.get("device") == "dead"] == ["device failing"]
    assert capture.frame().filter(pl.col("device") == "m1").height >= 6 * len(SDM630.registers)


async def test_a_gateway_that_restarts_fails_once_and_recovers_once() -> None:
    """The gateway goes away (connection refused) and comes back on the same port.

    Chosen: polls fail with reason ``connect`` while it is away (logged once), and the
    collector reconnects by itself on the next poll after it returns (logged once).
    """
    first = ModbusServer({1: Unit(sdm())}).start()
    port = first.port
    options = tcp_options(port, [device("m1", 1)], interval_s=0.05, backoff_max_s=0.05)
    collector = make(options, name="modbus-restart")
    with structlog.testing.capture_logs() as events:
        await run_until(collector, lambda c: c.states["m1"].finished >= 2)
        first.stop()
        await run_until(collector, lambda c: c.states["m1"].failures["connect"] >= 2)
        with ModbusServer({1: Unit(sdm())}, port=port):
            await run_until(collector, lambda c: not c.states["m1"].failing)
    state = collector.states["m1"]
    assert not state.failing and state.failures["connect"] >= 2
    names = [e["event"] for e in events if e.get("device") == "m1"]
    assert names == ["device failing", "device recovered"]


async def test_cancelling_a_busy_collector_always_stops_it(server) -> None:
    """Cancel while units poll back to back: the collector stops every time.

    pymodbus awaits each answer with asyncio.wait_for, which on Python 3.11 can drop a
    cancellation arriving with the answer; the device loops notice the pending cancel
    themselves (without that, this hung about one run in three under load).
    """
    for _ in range(8):
        devices = [device(f"m{u}", u) for u in (1, 3, 4)]
        collector = make(tcp_options(server.port, devices, interval_s=0.001))
        ctx = CollectorContext(name="c", settings=collector.settings, emit=Capture())  # type: ignore[arg-type]
        task = asyncio.create_task(collector.run(ctx))
        await asyncio.sleep(0.15)
        assert sum(s.finished for s in collector.states.values()) > 3
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5)
        assert done, "the collector ignored its cancellation"
