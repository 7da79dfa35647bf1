"""The CLI imports a command's module only when that command runs.

``pue-agent kpi`` or ``--version`` must not pay for the daemon, the demo's simulated
devices, the report's charts or a protocol library (bacpypes3 alone takes 0.35 s).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer.main

from agent.cli import COMMANDS, app

#: Modules only some commands need; none of them may load for ``--version`` or ``kpi --help``.
HEAVY = (
    "agent.demo",
    "agent.service",
    "agent.report.charts",
    "matplotlib",
    "bacpypes3",
    "pymodbus",
    "pysnmp",
    "nats",
    "collectors.snmp",
)

_LOADED = """
import sys
from agent.cli import main
sys.argv = ["pue-agent", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
finally:
    print("\\n".join(sorted(sys.modules)), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--version"], ["kpi", "--help"], ["journal", "--help"]])
def test_a_command_loads_only_its_own_modules(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _LOADED, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    loaded = set(result.stderr.split())
    assert "agent.cli" in loaded  # the listing really is the process's modules
    assert not sorted(m for m in loaded if m.split(".")[0] in HEAVY or m in HEAVY), args


def test_every_listed_command_loads_under_its_name() -> None:
    group = typer.main.get_command(app)
    ctx = group.make_context("pue-agent", ["--help"], resilient_parsing=True)
    names = group.list_commands(ctx)  # type: ignore[attr-defined]
    assert list(COMMANDS) == [n for n in names if n in COMMANDS]
    for name in COMMANDS:
        command = group.get_command(ctx, name)  # type: ignore[attr-defined]
        assert command is not None and command.name == name
        assert command.help or getattr(command, "commands", None), name
