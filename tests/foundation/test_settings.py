"""Settings layers: defaults < TOML < PUE_AGENT_* environment < secrets directory."""

from __future__ import annotations

from pathlib import Path

import pytest

import agent.settings
from agent.settings import CONFIG_ENV, ConfigError, load_settings, read_secret


def test_layers_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        'state_dir = "from-toml"\nlog_level = "debug"\nlog_format = "json"\n'
        "[journal]\nbudget_mb = 10\n",
        encoding="utf-8",
    )
    # Defaults only.
    assert load_settings(None).state_dir == Path("/var/lib/pue-agent")
    # TOML over defaults; relative paths are relative to the config file.
    settings = load_settings(config)
    assert settings.state_dir == tmp_path / "from-toml"
    assert settings.journal.budget_mb == 10
    assert settings.log_level == "debug"
    # Environment over TOML (nested with __).
    monkeypatch.setenv("PUE_AGENT_LOG_LEVEL", "warning")
    monkeypatch.setenv("PUE_AGENT_JOURNAL__BUDGET_MB", "20")
    settings = load_settings(config)
    assert settings.log_level == "warning"
    assert settings.journal.budget_mb == 20
    assert settings.log_format == "json"  # untouched layers still come from the file
    # Secrets directory over environment.
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "log_level").write_text("error\n", encoding="utf-8")
    (creds / "signing_key_passphrase").write_text("s3cr3t-pass\n", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    settings = load_settings(config)
    assert settings.log_level == "error"
    assert settings.signing_key_passphrase is not None
    assert settings.signing_key_passphrase.get_secret_value() == "s3cr3t-pass"
    # A secret is never printed by the settings object.
    assert "s3cr3t-pass" not in repr(settings)
    assert "s3cr3t-pass" not in settings.model_dump_json()


def test_named_secret_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "influx_token").write_text("tok-123\n", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert read_secret("influx_token").get_secret_value() == "tok-123"
    with pytest.raises(ConfigError, match="secret 'snmp_key' not found") as info:
        read_secret("snmp_key")
    assert "tok-123" not in str(info.value)


def test_bad_config_names_file_and_field(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('log_level = "loud"\n[journal]\nbudget_mb = -1\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    text = str(info.value)
    assert f"{config}: log_level" in text
    assert f"{config}: journal.budget_mb" in text


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")


def test_default_config_is_pue_agent_config_else_the_installed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = tmp_path / "etc-agent.toml"
    installed.write_text(f'state_dir = "{tmp_path / "installed"}"\n', encoding="utf-8")
    named = tmp_path / "named.toml"
    named.write_text(f'state_dir = "{tmp_path / "named"}"\n', encoding="utf-8")
    monkeypatch.setattr(agent.settings, "DEFAULT_CONFIG_PATH", installed)
    monkeypatch.delenv(CONFIG_ENV)
    assert load_settings().state_dir == tmp_path / "installed"
    monkeypatch.setenv(CONFIG_ENV, str(named))
    assert load_settings().state_dir == tmp_path / "named"
    # Empty: no file at all, even though the installed one exists (what the test session uses).
    monkeypatch.setenv(CONFIG_ENV, "")
    assert load_settings().config_path is None
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match=r"missing\.toml: config file not found"):
        load_settings()
