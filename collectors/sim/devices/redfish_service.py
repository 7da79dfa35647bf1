"""Redfish services serving a tree the project writes (:func:`gpu_server_tree`) with live power.

URL path ``/redfish/v1/...`` selects a document of the tree; chosen JSON properties are
replaced by live values from the simulator on every request.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["GPU_SERVER_POWER", "LiveProperty", "RedfishService", "gpu_server_tree"]

#: Path -> JSON document, e.g. ``"/redfish/v1/Chassis"`` -> the Chassis collection.
Tree = dict[str, dict[str, Any]]

_ROOT = "/redfish/v1"
_CHASSIS = f"{_ROOT}/Chassis/1"
#: The chassis' (deprecated, still the most widely implemented) Power resource.
GPU_SERVER_POWER = f"{_CHASSIS}/Power"


def _link(path: str) -> dict[str, str]:
    return {"@odata.id": path}


def gpu_server_tree(name: str, *, psus: int = 2, capacity_w: float = 3200.0) -> Tree:
    """The minimal Redfish tree of a GPU server's BMC, as the Redfish collector walks it.

    Service root -> Chassis collection -> one ``RackMount`` chassis -> its Power resource:
    ``PowerControl[0].PowerConsumedWatts`` is the server's input power, and each of
    ``PowerSupplies[].PowerInputWatts`` is one PSU's share (a breakdown). The numbers here are
    placeholders; :class:`RedfishService` fills them with live values.
    """
    return {
        _ROOT: {
            "@odata.id": _ROOT,
            "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot",
            "Id": "RootService",
            "Name": f"Root Service ({name})",
            "RedfishVersion": "1.17.0",
            "Vendor": "pue-agent demo",
            "Product": "Simulated GPU server",
            "Chassis": _link(f"{_ROOT}/Chassis"),
        },
        f"{_ROOT}/Chassis": {
            "@odata.id": f"{_ROOT}/Chassis",
            "@odata.type": "#ChassisCollection.ChassisCollection",
            "Name": "Chassis Collection",
            "Members": [_link(_CHASSIS)],
            "Members@odata.count": 1,
        },
        _CHASSIS: {
            "@odata.id": _CHASSIS,
            "@odata.type": "#Chassis.v1_21_0.Chassis",
            "Id": "1",
            "Name": name,
            "ChassisType": "RackMount",
            "Manufacturer": "pue-agent demo",
            "Model": "Simulated GPU server",
            "PowerState": "On",
            "Status": {"State": "Enabled", "Health": "OK"},
            "Power": _link(GPU_SERVER_POWER),
        },
        GPU_SERVER_POWER: {
            "@odata.id": GPU_SERVER_POWER,
            "@odata.type": "#Power.v1_7_1.Power",
            "Id": "Power",
            "Name": "Power",
            "PowerControl": [
                {
                    "@odata.id": f"{GPU_SERVER_POWER}#/PowerControl/0",
                    "MemberId": "0",
                    "Name": "System Power Control",
                    "PowerCapacityWatts": capacity_w,
                    "PowerConsumedWatts": 0.0,
                }
            ],
            "PowerSupplies": [
                {
                    "@odata.id": f"{GPU_SERVER_POWER}#/PowerSupplies/{i}",
                    "MemberId": str(i),
                    "Name": f"PSU {i + 1}",
                    "PowerSupplyType": "AC",
                    "PowerCapacityWatts": capacity_w / psus * 1.5,
                    "LineInputVoltage": 230.0,
                    "PowerInputWatts": 0.0,
                    "Status": {"State": "Enabled", "Health": "OK"},
                }
                for i in range(psus)
            ],
        },
    }


@dataclass(frozen=True)
class LiveProperty:
    """A property replaced on each GET: resource path, key path inside it, value source."""

    resource: str
    keys: tuple[str | int, ...]
    value: Callable[[], float]


@dataclass
class RedfishService:
    """One simulated BMC on its own loopback port."""

    tree: Tree
    live: list[LiveProperty] = field(default_factory=list)
    port: int = 0
    requests: int = 0
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        path = request.path.rstrip("/")
        document = self.tree.get(path)
        if document is None:
            return web.json_response(
                {"error": {"code": "Base.1.0.ResourceMissingAtURI"}}, status=404
            )
        body: Any = copy.deepcopy(document)
        for prop in self.live:
            if prop.resource.rstrip("/") == path:
                target = body
                for key in prop.keys[:-1]:
                    target = target[key]
                target[prop.keys[-1]] = round(prop.value(), 1)
        return web.json_response(body)

    async def start(self) -> int:
        """Serve on 127.0.0.1 (plain HTTP: the demo runs on loopback only)."""
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
