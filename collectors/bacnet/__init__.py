"""The ``bacnet`` collector: chillers, cooling towers and CRAHs on BACnet/IP (bacpypes3)."""

from collectors.bacnet.collector import BacnetCollector, build
from collectors.bacnet.options import BacnetOptions, DeviceOptions

__all__ = ["BacnetCollector", "BacnetOptions", "DeviceOptions", "build"]
