"""The ``sim`` collector: a simulated site for the demo, tests and benchmarks."""

from collectors.sim.collector import SimCollector, SimOptions, build

__all__ = ["SimCollector", "SimOptions", "build"]
