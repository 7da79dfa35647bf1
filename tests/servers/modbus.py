"""Start real pymodbus servers on loopback (Modbus TCP, RTU over TCP, RTU on a socat pty).

A :class:`ModbusServer` runs pymodbus's server in its own thread and event loop, so
one server can be shared by a whole test module whatever loop each test runs in.
Units hold registers the test writes with :func:`encode` (the simulated meters'
encoder, written from the Modbus type definitions with :mod:`struct`, independent of
the collector's decoder). Misbehaviour is configured per unit: an exception code for
every read, refusal of reads that touch unmapped registers, answers under another
unit id, answers cut off after a few bytes, or no answer at all (a unit that is
simply not on the line: the server ignores requests for missing units).

``python -m tests.servers.modbus --port N --map NAME --units K`` serves a map's
registers from a separate process (the benchmark's server).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import SimData, SimDevice
from pymodbus.simulator.simutils import DataType

from collectors.modbus.maps import DeviceMap, load_maps
from collectors.sim.devices.modbus_meter import encode
from tests.servers import free_port, require_binary, stop_process, wait_tcp

__all__ = [
    "ModbusServer",
    "PtyPair",
    "Unit",
    "encode",
    "map_registers",
    "pty_pair",
    "serve_map_process",
]


def map_registers(device_map: DeviceMap, raws: dict[str, float]) -> dict[int, int]:
    """address -> register for every register of a map (``raws``: point -> raw value, else 0)."""
    out: dict[int, int] = {}
    for r in device_map.registers:
        assert r.type is not None and r.word_order is not None and r.byte_order is not None
        words = encode(r.type, raws.get(r.point, 0), r.word_order, r.byte_order)
        for i, w in enumerate(words):
            out[r.address + i] = w
    return out


@dataclass
class Unit:
    """One unit id on the server and how it behaves."""

    registers: dict[int, int]
    #: Answer every read with this Modbus exception code.
    exception: int | None = None
    #: Answer exception 2 (illegal data address) to reads touching an address not in
    #: ``registers`` (devices that refuse read-through of holes).
    refuse_holes: bool = False
    #: Answer under this unit id instead of its own.
    answer_as: int | None = None
    #: Send only the first N bytes of each answer (a device that stops mid-frame).
    truncate_to: int | None = None
    #: Called with (address, count) before each read: may change ``registers`` live.
    on_read: Callable[[int, int], None] | None = None
    reads: int = 0


@dataclass
class ModbusServer:
    """A pymodbus server in its own thread; see the module docstring."""

    units: dict[int, Unit]
    framer: str = "socket"  # "socket" (Modbus TCP) or "rtu" (RTU frames)
    serial_port: str | None = None  # serve RTU on this serial device instead of TCP
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: ModbusTcpServer | ModbusSerialServer | None = None
    _blocks: dict[int, tuple[int, list[int]]] = field(default_factory=dict)

    def _device(self, unit_id: int, unit: Unit) -> SimDevice:
        addresses = sorted(unit.registers) or [0]
        start, end = addresses[0], addresses[-1] + 1
        values = [unit.registers.get(a, 0) for a in range(start, end)]

        async def action(
            func_code: int,
            start_address: int,
            address: int,
            count: int,
            registers: list[int],
            values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            unit.reads += 1
            if unit.exception is not None:
                return ExcCodes(unit.exception)
            if unit.refuse_holes and any(
                a not in unit.registers for a in range(address, address + count)
            ):
                return ExcCodes.ILLEGAL_ADDRESS
            if unit.on_read is not None:
                unit.on_read(address, count)
                for a, v in unit.registers.items():
                    registers[a - start_address] = v
            return None

        return SimDevice(
            unit_id,
            simdata=[SimData(start, values=values, datatype=DataType.REGISTERS)],
            action=action,
        )

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if sending:
            unit = self.units.get(pdu.dev_id)
            if unit is not None and unit.answer_as is not None:
                pdu.dev_id = unit.answer_as
        return pdu

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending and data:
            unit_id = data[6] if self.framer == "socket" else data[0]
            unit = self.units.get(unit_id)
            if unit is None and all(u.answer_as != unit_id for u in self.units.values()):
                return b""  # not on the line: nobody answers (pymodbus would say 0x04)
            if unit is not None and unit.truncate_to is not None:
                return data[: unit.truncate_to]
        return data

    def start(self) -> ModbusServer:
        """Start serving (returns once the server listens)."""
        ready = threading.Event()
        failure: list[BaseException] = []
        if self.serial_port is not None:
            self.framer = "rtu"
        if self.serial_port is None and not self.port:
            self.port = free_port()

        async def main() -> None:
            devices = [self._device(i, u) for i, u in self.units.items()]
            common = {
                "ignore_missing_devices": True,
                "trace_pdu": self._trace_pdu,
                "trace_packet": self._trace_packet,
            }
            if self.serial_port is not None:
                self._server = ModbusSerialServer(
                    devices, framer=FramerType.RTU, port=self.serial_port, baudrate=19200, **common
                )
            else:
                self._server = ModbusTcpServer(
                    devices,
                    framer=FramerType.SOCKET if self.framer == "socket" else FramerType.RTU,
                    address=("127.0.0.1", self.port),
                    **common,
                )
            try:
                await self._server.serve_forever(background=True)
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            await self._server.serving

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            with contextlib.suppress(asyncio.CancelledError):
                self._loop.run_until_complete(main())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="modbus-server", daemon=True)
        self._thread.start()
        if not ready.wait(15) or failure:
            raise RuntimeError(f"modbus server did not start: {failure}")
        if self.serial_port is None:
            wait_tcp(self.port)
        return self

    def stop(self) -> None:
        """Shut the server down and join its thread."""
        if self._loop is not None and self._server is not None:
            server = self._server
            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(server.shutdown(), self._loop).result(10)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> ModbusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class PtyPair:
    """Two linked pseudo-terminals made by socat: what one end writes, the other reads."""

    a: str
    b: str
    proc: subprocess.Popen[bytes]


@contextlib.contextmanager
def pty_pair() -> Iterator[PtyPair]:
    """A virtual serial line (``socat`` from Debian; the test fails if it is missing)."""
    socat = require_binary("socat")
    with tempfile.TemporaryDirectory(prefix="pue-modbus-pty-") as tmp:
        a, b = str(Path(tmp) / "a"), str(Path(tmp) / "b")
        proc = subprocess.Popen(
            [socat, f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while not (Path(a).exists() and Path(b).exists()):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("socat did not create the pty pair")
                time.sleep(0.02)
            yield PtyPair(a, b, proc)
        finally:
            stop_process(proc)


def serve_map_process(
    map_name: str, units: int, maps_dir: Path | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """Serve ``units`` copies of a map (arbitrary finite values) from another process."""
    port = free_port()
    extra = ["--maps-dir", str(maps_dir)] if maps_dir is not None else []
    proc = subprocess.Popen(
        [
            str(Path(__file__).resolve().parents[2] / ".venv/bin/python"),
            "-m",
            "tests.servers.modbus",
            "--port",
            str(port),
            "--map",
            map_name,
            "--units",
            str(units),
            *extra,
        ],
        cwd=Path(__file__).resolve().parents[2],
    )
    wait_tcp(port, proc=proc)
    return proc, port


def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--map", required=True)
    parser.add_argument("--units", type=int, default=1)
    parser.add_argument("--maps-dir", type=Path, default=None)
    args = parser.parse_args()
    device_map = load_maps([args.maps_dir] if args.maps_dir else [])[args.map]
    raws = {r.point: 100 + i for i, r in enumerate(device_map.registers)}
    registers = map_registers(device_map, raws)
    units = {u: Unit(dict(registers)) for u in range(1, args.units + 1)}
    server = ModbusServer(units, port=args.port).start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    _main()
