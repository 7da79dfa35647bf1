"""The ``snmp`` collector kind: PDUs, UPSes, meters and cooling units over SNMP v2c/v3.

Device knowledge lives in TOML profiles (``collectors/snmp/profiles/``); see README.md.
"""

from collectors.snmp.collector import SnmpCollector, SnmpOptions, build

__all__ = ["SnmpCollector", "SnmpOptions", "build"]
