"""The ``redfish`` collector: server BMCs (NVIDIA GPU systems too), Redfish PDUs, cooling units."""

from collectors.redfish.collector import RedfishCollector, build
from collectors.redfish.options import DeviceOptions, RedfishOptions

__all__ = ["DeviceOptions", "RedfishCollector", "RedfishOptions", "build"]
