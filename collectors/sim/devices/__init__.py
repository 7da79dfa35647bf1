"""Simulated devices behind real protocols, for ``pue-agent demo`` and end-to-end tests.

Each speaks a real device's protocol with data the project generates itself (SNMP tables of
an APC rack PDU and Smart-UPS, a Redfish tree of a GPU server, Shelly Pro 3EM payloads) and
live values from :class:`collectors.sim.simulator.SiteSimulator`, on loopback ports. No
device capture is read, so an installed agent runs the demo as a development tree does.
"""
