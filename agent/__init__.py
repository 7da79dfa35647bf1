"""pue-agent: auditable PUE, green share and CUE from datacenter telemetry."""

__version__ = "0.1.0"
