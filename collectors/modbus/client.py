"""Modbus errors, the one place pymodbus exceptions are translated, and the bus.

A :class:`Bus` is one pymodbus async client: a Modbus TCP connection (a native meter
or a gateway in front of an RS-485 line), RTU framing over TCP (a transparent serial
server), or RTU on a local serial port. RS-485 is half-duplex and gateways forward
one request at a time, so a bus lets exactly one request be in flight; different
buses run in parallel. Each request carries its own deadline, so a unit that does not
answer holds the bus for its timeout and no longer.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Literal

from pymodbus import FramerType, ModbusException
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

__all__ = [
    "EXCEPTION_REASONS",
    "Bus",
    "BusConfig",
    "ModbusConnectError",
    "ModbusError",
    "ModbusExceptionCodeError",
    "ModbusProtocolError",
    "ModbusTimeoutError",
    "ModbusWrongUnitError",
    "Transport",
]

Transport = Literal["tcp", "rtu-over-tcp", "rtu"]

#: Modbus exception codes (Modbus Application Protocol V1.1b3, section 7) -> metric reason.
EXCEPTION_REASONS: dict[int, str] = {
    1: "illegal_function",
    2: "illegal_data_address",
    3: "illegal_data_value",
    4: "server_device_failure",
    5: "acknowledge",
    6: "server_device_busy",
    8: "memory_parity_error",
    10: "gateway_path_unavailable",
    11: "gateway_target_no_response",
}

# pymodbus logs an ERROR line for every timeout and every skipped frame; the collector
# logs a device once when it fails and once when it recovers, so only pymodbus's
# critical messages are let through.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


class ModbusError(Exception):
    """A Modbus request failed; ``reason`` is a short label for metrics."""

    reason = "error"


class ModbusConnectError(ModbusError):
    """The TCP connection or the serial port could not be opened, or was lost."""

    reason = "connect"


class ModbusTimeoutError(ModbusError):
    """The unit did not answer within its timeout (or the answer stopped mid-frame)."""

    reason = "timeout"


class ModbusWrongUnitError(ModbusTimeoutError):
    """Only an answer from another unit id came back (discarded): a gateway mix-up."""

    reason = "wrong_unit"


class ModbusProtocolError(ModbusError):
    """The answer was malformed (wrong length, undecodable)."""

    reason = "protocol"


class ModbusExceptionCodeError(ModbusError):
    """The unit answered with a Modbus exception code."""

    def __init__(self, label: str, code: int, function: int, address: int, count: int) -> None:
        self.code = code
        self.reason = f"exception_{EXCEPTION_REASONS.get(code, f'code_{code}')}"
        super().__init__(
            f"{label}: exception {code:#04x} ({EXCEPTION_REASONS.get(code, 'unknown')}) "
            f"reading {count} register(s) at {address} with function {function}"
        )


@dataclass(frozen=True)
class BusConfig:
    """Where a bus is and how to talk on it."""

    name: str
    transport: Transport
    host: str = ""
    port: int = 502
    serial_port: str = ""
    baudrate: int = 9600
    bytesize: int = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: int = 1
    #: The longest device timeout on the bus (pymodbus's own timer never fires first).
    timeout_s: float = 2.0

    def describe(self) -> str:
        """``tcp 10.0.0.5:502`` or ``rtu /dev/ttyUSB0 9600 8N1``."""
        if self.transport == "rtu":
            frame = f"{self.bytesize}{self.parity}{self.stopbits}"
            return f"rtu {self.serial_port} {self.baudrate} {frame}"
        return f"{self.transport} {self.host}:{self.port}"


class Bus:
    """One client, one request in flight; see the module docstring."""

    def __init__(self, config: BusConfig) -> None:
        """Create the client (not connected yet)."""
        self.config = config
        self.lock = asyncio.Lock()
        self.requests = 0
        self._expected_unit = -1
        self._other_unit_seen = False
        self._first_chunk = False
        # Our own deadline runs each request; pymodbus's timer (also its connect timeout)
        # is set just beyond it, and pymodbus retries nothing (the collector's retries do).
        common = {
            "timeout": config.timeout_s + 1.0,
            "retries": 0,
            "reconnect_delay": 0.0,
            "trace_packet": self._trace,
        }
        self.client: AsyncModbusTcpClient | AsyncModbusSerialClient
        if config.transport == "rtu":
            self.client = AsyncModbusSerialClient(
                config.serial_port,
                framer=FramerType.RTU,
                baudrate=config.baudrate,
                bytesize=config.bytesize,
                parity=config.parity,
                stopbits=config.stopbits,
                **common,  # type: ignore[arg-type]
            )
        else:
            self.client = AsyncModbusTcpClient(
                config.host,
                port=config.port,
                framer=FramerType.SOCKET if config.transport == "tcp" else FramerType.RTU,
                **common,  # type: ignore[arg-type]
            )

    def _trace(self, sending: bool, data: bytes) -> bytes:
        # pymodbus drops a frame from another unit silently; note it so the timeout that
        # follows can say why (the unit id is byte 6 of an MBAP header, byte 0 of RTU).
        # Only the first chunk after a request starts a frame (serial data comes in pieces).
        if sending:
            self._first_chunk = True
        elif data and self._first_chunk:
            self._first_chunk = False
            at = 6 if self.config.transport == "tcp" else 0
            if len(data) > at and data[at] != self._expected_unit:
                self._other_unit_seen = True
        return data

    async def _connect(self, label: str, timeout_s: float) -> None:
        if self.client.connected:
            return
        try:
            async with asyncio.timeout(timeout_s):
                ok = await self.client.connect()
        except (TimeoutError, OSError, ModbusException) as exc:
            raise ModbusConnectError(
                f"{label}: cannot connect ({self.config.describe()}): {type(exc).__name__}"
            ) from None
        if not ok:
            raise ModbusConnectError(f"{label}: cannot connect ({self.config.describe()})")

    async def read(
        self, label: str, unit: int, function: int, address: int, count: int, timeout_s: float
    ) -> list[int]:
        """Read ``count`` registers with function 3 or 4; the bus is held for this request.

        Raises:
            ModbusError: a subclass saying what went wrong (timeout, exception code, …).
        """
        async with self.lock:
            await self._connect(label, timeout_s)
            self.requests += 1
            self._expected_unit = unit
            self._other_unit_seen = False
            call = (
                self.client.read_holding_registers
                if function == 3
                else self.client.read_input_registers
            )
            try:
                async with asyncio.timeout(timeout_s):
                    response = await call(address, count=count, device_id=unit)
            except TimeoutError:
                if self._other_unit_seen:
                    raise ModbusWrongUnitError(
                        f"{label}: only an answer from another unit id came back "
                        f"(asked unit {unit})"
                    ) from None
                raise ModbusTimeoutError(
                    f"{label}: no complete answer within {timeout_s:g} s "
                    f"({count} register(s) at {address}, function {function})"
                ) from None
            except ModbusException as exc:
                if not self.client.connected:
                    raise ModbusConnectError(f"{label}: connection lost: {exc}") from None
                raise ModbusProtocolError(f"{label}: {exc}") from None
            except OSError as exc:
                raise ModbusConnectError(f"{label}: {type(exc).__name__}: {exc}") from None
        if response.isError():
            raise ModbusExceptionCodeError(
                label, int(getattr(response, "exception_code", 0)), function, address, count
            )
        registers = list(response.registers)
        if len(registers) != count:
            raise ModbusProtocolError(
                f"{label}: asked {count} register(s) at {address}, got {len(registers)}"
            )
        return registers

    def close(self) -> None:
        """Close the connection or the serial port."""
        self.client.close()
