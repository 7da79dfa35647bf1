"""The ``nats`` collector: the site aggregator role over NATS JetStream (see ``README.md``)."""

from collectors.nats.collector import NatsCollector, NatsCollectorOptions, build

__all__ = ["NatsCollector", "NatsCollectorOptions", "build"]
