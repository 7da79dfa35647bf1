"""Small pieces shared by the SNMP collector tests that run against real snmpd."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import polars as pl
from pydantic import SecretStr

from agent.readings import ReadingBuffer
from collectors.snmp.client import Session, UdpDispatcher
from collectors.snmp.collector import make_session
from collectors.snmp.poller import DevicePlan, Poller

__all__ = ["ONE_GAUGE_PROFILE", "poll_plan", "sim_session", "until"]

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


def sim_session(
    dispatcher: UdpDispatcher, port: int, community: str, *, label: str | None = None
) -> Session:
    """A lean v2c session to the snmpsim recording ``community`` (5 s timeout, 2 retries)."""
    return make_session(
        "127.0.0.1",
        port,
        community=SecretStr(community),
        v3=None,
        timeout_s=5.0,
        retries=2,
        dispatcher=dispatcher,
        engine=None,
        label=label or community,
    )


async def poll_plan(port: int, community: str, plan: DevicePlan) -> pl.DataFrame:
    """One poll of ``plan`` against the snmpsim recording ``community``: its readings."""
    dispatcher = UdpDispatcher()
    await dispatcher.open()
    try:
        buffer = ReadingBuffer()
        await Poller(community, sim_session(dispatcher, port, community), plan).poll(buffer)
        return buffer.take()
    finally:
        dispatcher.close()
