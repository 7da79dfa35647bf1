"""A small SNMPv2c agent over asyncio UDP, answering from tables of value sources.

It speaks GET, GETNEXT and GETBULK with pysnmp's protocol codec (no MIB machinery), which is
all a poller needs. Each device is a table the project builds (:mod:`collectors.sim.devices.apc`):
OID -> a callable giving the value now, so registers rise with power.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pyasn1.codec.ber import decoder, encoder
from pyasn1.error import PyAsn1Error
from pysnmp.proto import api
from pysnmp.proto.api import v2c

__all__ = ["SnmpResponder"]

Oid = tuple[int, ...]


def _oid(text: str) -> Oid:
    return tuple(int(part) for part in text.strip(".").split("."))


@dataclass
class _Agent:
    table: dict[Oid, Callable[[], Any]]
    keys: list[Oid] = field(init=False)

    def __post_init__(self) -> None:
        self.keys = sorted(self.table)

    def value(self, oid: Oid) -> Any:
        return self.table[oid]()


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, agents: dict[str, _Agent]) -> None:
        self.agents = agents
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            response = self._answer(data)
        except (PyAsn1Error, ValueError, KeyError):
            return  # garbage or an unknown community: a real agent stays silent too
        if response is not None and self.transport is not None:
            self.transport.sendto(response, addr)

    def _answer(self, data: bytes) -> bytes | None:
        if api.decodeMessageVersion(data) != api.SNMP_VERSION_2C:
            return None
        module = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
        request, _ = decoder.decode(data, asn1Spec=module.Message())
        agent = self.agents[str(module.apiMessage.get_community(request))]
        pdu = module.apiMessage.get_pdu(request)
        response = module.apiMessage.get_response(request)
        out_pdu = module.apiMessage.get_pdu(response)
        binds: list[tuple[Any, Any]] = []
        asked = [tuple(oid) for oid, _ in module.apiPDU.get_varbinds(pdu)]
        if pdu.isSameTypeWith(module.GetRequestPDU()):
            for oid in asked:
                value = agent.value(oid) if oid in agent.table else v2c.NoSuchInstance()
                binds.append((v2c.ObjectIdentifier(oid), value))
        elif pdu.isSameTypeWith(module.GetNextRequestPDU()):
            binds = [self._next(agent, oid) for oid in asked]
        elif pdu.isSameTypeWith(module.GetBulkRequestPDU()):
            non_rep = int(module.apiBulkPDU.get_non_repeaters(pdu))
            max_rep = min(int(module.apiBulkPDU.get_max_repetitions(pdu)), 64)
            binds = [self._next(agent, oid) for oid in asked[:non_rep]]
            cursors = asked[non_rep:]
            for _ in range(max_rep):
                row = [self._next(agent, oid) for oid in cursors]
                binds += row
                cursors = [tuple(oid) for oid, _ in row]
                if all(isinstance(v, v2c.EndOfMibView) for _, v in row):
                    break
        else:
            return None
        module.apiPDU.set_varbinds(out_pdu, binds)
        encoded: bytes = encoder.encode(response)
        return encoded

    @staticmethod
    def _next(agent: _Agent, oid: Oid) -> tuple[Any, Any]:
        position = bisect.bisect_right(agent.keys, oid)
        if position >= len(agent.keys):
            return v2c.ObjectIdentifier(oid), v2c.EndOfMibView()
        found = agent.keys[position]
        return v2c.ObjectIdentifier(found), agent.value(found)


class SnmpResponder:
    """Serves several simulated devices on one UDP port; the community selects the device."""

    def __init__(self) -> None:
        """Create an empty responder; add devices with :meth:`add_device`."""
        self._agents: dict[str, _Agent] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self.port = 0

    def add_device(self, community: str, table: Mapping[str, Callable[[], Any]]) -> None:
        """Serve ``table`` (OID text -> value source) to requests with ``community``."""
        self._agents[community] = _Agent(table={_oid(oid): fn for oid, fn in table.items()})

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Bind and serve; returns the UDP port."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self._agents), local_addr=(host, port)
        )
        self._transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        return self.port

    def close(self) -> None:
        """Stop serving."""
        if self._transport is not None:
            self._transport.close()
