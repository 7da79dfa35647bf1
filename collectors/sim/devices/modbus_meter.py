"""Simulated Modbus TCP meters: a pymodbus server whose registers follow live values.

The demo's grid incomers sit behind a Modbus TCP gateway as on most sites: one pymodbus
server on a loopback port, one unit id per meter, each laid out by a device map of
``collectors/modbus/maps`` (CHINT DTSU666 in the demo). Before each read the polled
points' registers are rewritten from the simulator (value / the map's scale, encoded
by the map's type and word order), so the collector reads what the simulator says.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import SimData, SimDevice
from pymodbus.simulator.simutils import DataType

from collectors.modbus.maps import REGISTER_WORDS, DeviceMap

__all__ = ["LiveMeter", "ModbusMeterServer", "encode"]

_STRUCT = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "int64": ">q",
    "uint64": ">Q",
    "float32": ">f",
    "float64": ">d",
}


def encode(kind: str, raw: float, word_order: str = "big", byte_order: str = "big") -> list[int]:
    """Registers holding ``raw`` as ``kind``: big-endian bytes, then reordered as asked.

    Args:
        kind: A map register type (``int16`` … ``float64``).
        raw: The value in the register's own unit (integers are truncated).
        word_order: ``little`` puts the least significant word first.
        byte_order: ``little`` swaps the two bytes of each register.

    Returns:
        The 16-bit register values, first register first.
    """
    data = struct.pack(_STRUCT[kind], int(raw) if kind[0] in "iu" else raw)
    words = [data[i : i + 2] for i in range(0, len(data), 2)]
    if byte_order == "little":
        words = [w[::-1] for w in words]
    if word_order == "little":
        words.reverse()
    return [int.from_bytes(w, "big") for w in words]


@dataclass
class LiveMeter:
    """One meter: its unit id, its map, and a live value (quantity unit) per point."""

    unit: int
    device_map: DeviceMap
    values: dict[str, Callable[[], float]]

    def registers(self) -> dict[int, int]:
        """Every register of the map: live points from their callables, the rest 0."""
        out: dict[int, int] = {}
        for r in self.device_map.registers:
            assert r.type is not None and r.word_order is not None and r.byte_order is not None
            live = self.values.get(r.point)
            raw = live() / r.scale if live is not None else 0.0
            for i, word in enumerate(encode(r.type, raw, r.word_order, r.byte_order)):
                out[r.address + i] = word
        return out


class ModbusMeterServer:
    """A Modbus TCP server (pymodbus) with the given meters as units, in the running loop."""

    def __init__(self, meters: list[LiveMeter], port: int) -> None:
        """Serve ``meters`` on 127.0.0.1:``port`` (call :meth:`start`)."""
        self.meters = meters
        self.port = port
        self._server: ModbusTcpServer | None = None

    def _device(self, meter: LiveMeter) -> SimDevice:
        first = meter.registers()
        start = min(first)
        end = max(first) + 1
        values = [first.get(a, 0) for a in range(start, end)]
        live = [(r.address, r) for r in meter.device_map.registers if r.point in meter.values]

        async def refresh(
            func_code: int,
            start_address: int,
            address: int,
            count: int,
            registers: list[int],
            values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            # Only the registers this read covers are recomputed.
            for at, r in live:
                assert r.type is not None and r.word_order is not None
                assert r.byte_order is not None
                if at + REGISTER_WORDS[r.type] <= address or at >= address + count:
                    continue
                raw = meter.values[r.point]() / r.scale
                for i, word in enumerate(encode(r.type, raw, r.word_order, r.byte_order)):
                    registers[at + i - start_address] = word
            return None

        return SimDevice(
            meter.unit,
            simdata=[SimData(start, values=values, datatype=DataType.REGISTERS)],
            action=refresh,
        )

    async def start(self) -> None:
        """Listen (returns once the server accepts connections)."""
        self._server = ModbusTcpServer(
            [self._device(m) for m in self.meters], address=("127.0.0.1", self.port)
        )
        await self._server.serve_forever(background=True)

    async def stop(self) -> None:
        """Stop listening and close connections."""
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
