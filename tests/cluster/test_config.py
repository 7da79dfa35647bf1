"""The ``nats`` sink and collector options: the shipped sample builds, bad input is named."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from agent.plugins import build_collector, build_consumer
from agent.settings import AgentSettings, ConfigError, collector_name_problems, load_settings
from agent.site import load_site_for
from collectors.nats.collector import NatsCollector
from tests.paths import ROOT


def _settings(tmp_path: Path, secrets: dict[str, str]) -> AgentSettings:
    folder = tmp_path / "secrets"
    folder.mkdir()
    for name, value in secrets.items():
        (folder / name).write_text(value + "\n", encoding="utf-8")
    return AgentSettings(state_dir=tmp_path / "state", secrets_dir=folder)


def test_sample_builds_with_its_secret(tmp_path: Path) -> None:
    sample = tomllib.loads((ROOT / "collectors/nats/sample.toml").read_text(encoding="utf-8"))
    settings = _settings(tmp_path, {"nats-aggregator": "s3cret-aggregator"})
    entry = sample["collectors"][0]
    options = {k: v for k, v in entry.items() if k not in ("kind", "name")}
    collector = build_collector("nats", entry["name"], options, settings)
    assert isinstance(collector, NatsCollector)
    assert "s3cret" not in collector.describe() and "s3cret" not in repr(collector)
    assert collector.options.replicas == 3 and collector.options.holder_id == "agg-a"


def test_sink_options_name_the_bad_field_never_the_secret(tmp_path: Path) -> None:
    settings = _settings(tmp_path, {"nats-agent": "s3cret-agent"})
    with pytest.raises(ConfigError, match=r"sinks\.campus: .*agent_id"):
        build_consumer("nats", "campus", {"agent_id": "has space"}, settings)
    with pytest.raises(ConfigError, match=r"sinks\.campus: .*lease_ttl_s"):
        build_consumer("nats", "campus", {"lease_ttl_s": 3}, settings)  # a collector option
    with pytest.raises(ConfigError, match="secret 'missing' not found"):
        build_consumer("nats", "campus", {"password_secret": "missing"}, settings)
    sink = build_consumer(
        "nats", "campus", {"agent_id": "b1-poller-a", "password_secret": "nats-agent"}, settings
    )
    assert "s3cret" not in sink.describe() and "s3cret" not in repr(sink)


@pytest.mark.parametrize("name", ["b1-pdus", "b1-meters-a", "b1-meters-b", "aggregator"])
def test_campus_agent_configs_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # What `pue-agent check` builds, with placeholder secrets and a state dir under tmp.
    secrets = tmp_path / "creds"
    secrets.mkdir()
    for secret in ("snmp_auth_key", "snmp_priv_key", "nats-agent", "api_tls_key"):
        (secrets / secret).write_text(f"placeholder-{secret}-0123456789\n", encoding="utf-8")
    for secret in ("api_token_ops", "api_token_auditor"):
        (secrets / secret).write_text("t" * 40 + "\n", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(secrets))
    config = ROOT / "deploy" / "campus" / "agents" / f"{name}.toml"
    settings = load_settings(config, state_dir=tmp_path / "state")
    assert not collector_name_problems(settings)
    site = load_site_for(settings)
    assert (site is not None) == (name == "aggregator")
    kinds = {e.kind for e in settings.collectors} | {e.kind for e in settings.sinks}
    assert "nats" in kinds
    for collector in settings.collectors:
        build_collector(collector.kind, collector.name or "c", collector.options(), settings)
    for sink in settings.sinks:
        build_consumer(sink.kind, sink.name or sink.kind, sink.options(), settings)
    assert not (tmp_path / "state").exists()  # building creates nothing
