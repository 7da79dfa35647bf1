"""Small pieces shared by the SNMP collector tests that run against real snmpd."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["ONE_GAUGE_PROFILE", "until"]

#: A one-metric profile reading snmpd's test gauge 1.3.6.1.4.1.99.7.1.0 as power in W (the
#: collector tests override that OID in snmpd): a plan of one GET PDU.
ONE_GAUGE_PROFILE = (
    'description = "test meter: one gauge"\nmib = "none"\n[match]\npresent = ["1.3.6.1.4.1.99.7"]\n'
    '[[metrics]]\nname = "p"\noid = "1.3.6.1.4.1.99.7.1.0"\npoint = "p"\nquantity = "power_w"\n'
)


async def until(check: Callable[[], object], what: str, timeout_s: float = 15.0) -> None:
    """Wait until ``check()`` is true; fail naming ``what`` after ``timeout_s``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
