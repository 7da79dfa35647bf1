"""Config files `check` must refuse clearly: not UTF-8, two collectors alike (issue 22).

Before: a config that is not UTF-8 gave a raw UnicodeDecodeError traceback, and two
collectors with one name passed `check` although `run` refused them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.pipeline import build_agent
from agent.settings import ConfigError, load_settings
from tests.foundation.test_check import run_check

SIM = '[[collectors]]\nkind = "sim"\nname = "{name}"\npdus = 2\n'


def test_a_config_that_is_not_utf8_names_file_line_and_byte(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    body = f'state_dir = "{tmp_path}/state"\n# caf\xe9 in Latin-1\n'.encode("latin-1")
    config.write_bytes(body)
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    offset = body.index(b"\xe9")
    assert str(info.value).startswith(f"{config}: line 2, column 6 (byte offset {offset})")
    assert "not UTF-8 (byte 0xe9)" in str(info.value)
    result = run_check(config)
    assert result.returncode == 2
    assert f"{config}: line 2, column 6" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_check_refuses_two_collectors_with_one_name_naming_both(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f'state_dir = "{tmp_path}/state"\n\n'
        + SIM.format(name="sim-a")  # collectors[0], line 3
        + SIM.format(name="sim-b")  # collectors[1], line 7
        + SIM.format(name="sim-a"),  # collectors[2], line 11
        encoding="utf-8",
    )
    expected = (
        f"{config}: collectors[0] (line 3) and collectors[2] (line 11) share the name 'sim-a'"
    )
    result = run_check(config)
    assert result.returncode == 1
    assert expected in result.stderr
    # `run` refuses with the same words (one rule for both).
    with pytest.raises(ConfigError, match=r"collectors\[0\] \(line 3\) and collectors\[2\]"):
        build_agent(load_settings(config))


def test_unique_names_and_a_disabled_twin_pass(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f'state_dir = "{tmp_path}/state"\n'
        + SIM.format(name="sim-a")
        + SIM.format(name="sim-a")
        + "enabled = false\n",
        encoding="utf-8",
    )
    result = run_check(config)
    assert "share the name" not in result.stderr, result.stderr
