"""Fixtures: real mosquitto brokers for the MQTT tests (see tests/servers/mosquitto.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.mosquitto import Mosquitto, start_mosquitto

#: Test-only credentials for the password-protected broker (never a real secret).
BROKER_USER = "pue-agent"
BROKER_PASSWORD = "test-only-Pa55word"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A plain (no TLS, anonymous) persistent broker on a free loopback port."""
    broker = start_mosquitto(tmp_path / "broker")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mosquitto_tls(tmp_path: Path) -> Iterator[Mosquitto]:
    """A TLS broker with password auth (user :data:`BROKER_USER`)."""
    broker = start_mosquitto(
        tmp_path / "broker-tls", tls=True, users={BROKER_USER: BROKER_PASSWORD}
    )
    try:
        yield broker
    finally:
        broker.stop()
