"""Modbus collector (``kind = "modbus"``): Modbus TCP, RTU-over-TCP and RTU meters, maps as data."""

from collectors.modbus.collector import build

__all__ = ["build"]
