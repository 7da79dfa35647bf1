"""The ``mqtt`` collector kind: energy meters and gateways over MQTT, mappings as data."""

from collectors.mqtt.collector import MqttCollector, build
from collectors.mqtt.mapping import Mapping, load_mapping
from collectors.mqtt.options import MqttOptions

__all__ = ["Mapping", "MqttCollector", "MqttOptions", "build", "load_mapping"]
