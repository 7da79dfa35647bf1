"""The aggregator lease: a JetStream KV key that exactly one site aggregator holds.

The bucket's TTL is the lease time: the holder rewrites the key with
``update(last=revision)`` every third of it; a holder that stops (crash, host down,
network cut) stops rewriting, the key expires, and a standby's ``create`` (which
succeeds only when the key does not exist) makes it the holder. A holder whose
``update`` fails with a wrong revision has lost the lease and stops consuming at once.
JetStream's replicated KV decides, never a consensus of our own.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

__all__ = ["Lease", "open_bucket"]


async def open_bucket(
    js: JetStreamContext, bucket: str, *, ttl_s: float, replicas: int
) -> KeyValue:
    """The lease bucket, created with TTL ``ttl_s`` if missing."""
    try:
        return await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        pass
    config = KeyValueConfig(bucket=bucket, history=1, ttl=ttl_s, replicas=replicas)
    return await js.create_key_value(config)


@dataclass
class Lease:
    """One holder's view of the lease key."""

    kv: KeyValue
    key: str
    holder: str
    ttl_s: float
    revision: int | None = field(default=None, init=False)
    renewed_at: float = field(default=float("-inf"), init=False)

    @property
    def held(self) -> bool:
        """Whether this holder believes it holds the lease (renewed within the TTL)."""
        return self.revision is not None and time.monotonic() - self.renewed_at < self.ttl_s

    @property
    def renew_due(self) -> bool:
        """Whether a third of the TTL passed since the last renewal."""
        return time.monotonic() - self.renewed_at >= self.ttl_s / 3

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it (or this holder still does, after a restart)."""
        try:
            self.revision = await self.kv.create(self.key, self.holder.encode())
        except nats.js.errors.KeyWrongLastSequenceError:
            try:
                entry = await self.kv.get(self.key)
            except nats.js.errors.KeyNotFoundError:
                return False
            if entry.value != self.holder.encode() or entry.revision is None:
                return False
            self.revision = entry.revision  # our own lease from before a restart
            return await self.renew()
        self.renewed_at = time.monotonic()
        return True

    async def renew(self) -> bool:
        """Rewrite the key at our revision; ``False`` (lease lost) if someone else wrote it."""
        if self.revision is None:
            return False
        started = time.monotonic()
        try:
            self.revision = await self.kv.update(self.key, self.holder.encode(), last=self.revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            self.revision = None
            return False
        self.renewed_at = started
        return True

    async def release(self) -> None:
        """Give the lease up at once (clean stop), so the standby need not wait the TTL."""
        if self.revision is not None:
            with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
                await self.kv.delete(self.key, last=self.revision)
            self.revision = None
