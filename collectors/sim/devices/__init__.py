"""Simulated devices behind real protocols, for ``pue-agent demo`` and end-to-end tests.

Each serves the data of a real device (a snmprec walk, a Redfish capture, a Shelly payload)
with live values from :class:`collectors.sim.simulator.SiteSimulator` on loopback ports.
"""
