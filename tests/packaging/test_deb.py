"""The .deb as an operator gets it: install, run, verify the units, upgrade, purge.

One test walks the package's life in order (each step needs the one before); the steps
that take time are timed and printed (``-s`` shows them).
"""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

import agent
from tests.packaging.conftest import APT_ENV, installed_version, run
from tests.paths import ROOT

pytestmark = pytest.mark.slow

UNITS = ["pue-agent.service", "pue-agent-report.service", "pue-agent-report.timer"]
#: The exposure score the agent's unit must stay at or below (as tests/service/test_deploy.py).
MAX_EXPOSURE = 2.0
LEFT_BEHIND = [
    "/opt/pue-agent",
    "/etc/pue-agent",
    "/usr/bin/pue-agent",
    "/usr/share/doc/pue-agent",
    *(f"/lib/systemd/system/{unit}" for unit in UNITS),
]


def _contents(deb: Path) -> list[str]:
    """Paths in the package's data archive (``./opt/…``), via dpkg-deb."""
    listing = run(["dpkg-deb", "--contents", str(deb)]).stdout
    return [line.split(None, 5)[5].split(" -> ")[0] for line in listing.splitlines()]


def _field(deb: Path, name: str) -> str:
    return run(["dpkg-deb", "--field", str(deb), name]).stdout.strip()


def test_package_contents(built_deb: Path) -> None:
    paths = _contents(built_deb)
    for expected in (
        "./opt/pue-agent/bin/pue-agent",
        "./opt/pue-agent/bin/python3",
        "./usr/bin/pue-agent",
        "./etc/pue-agent/agent.toml",
        "./etc/pue-agent/site.toml",
        "./usr/share/doc/pue-agent/INSTALL.md",
        "./usr/share/doc/pue-agent/LICENSE",
        "./usr/share/doc/pue-agent/NOTICE",
        "./usr/share/doc/pue-agent/copyright",
        "./usr/share/doc/pue-agent/deploy/edge-room/agent.toml",
        "./usr/share/doc/pue-agent/docs/architecture.md",
        "./usr/share/doc/pue-agent/collectors/snmp/sample.toml",
        *(f"./lib/systemd/system/{unit}" for unit in UNITS),
    ):
        assert expected in paths, expected
    # The compiled kernel is in (built for Debian's python3), the test data is not: the
    # captured walks are GPL-licensed test fixtures, never part of what ships.
    assert any(re.search(r"agent/energy/_kernel\.cpython-3\d+-x86_64", p) for p in paths)
    assert not [p for p in paths if "fixtures" in p or p.endswith(("PROVENANCE", ".snmprec"))]
    assert not [p for p in paths if "/tests/" in p and "site-packages/agent" in p]
    depends = _field(built_deb, "Depends")
    for package in ("python3 (>= 3.11)", "fonts-noto-cjk", "libpango-1.0-0", "libpangoft2-1.0-0"):
        assert package in depends
    assert _field(built_deb, "Version") == agent.__version__
    conffiles = run(["dpkg-deb", "--info", str(built_deb), "conffiles"]).stdout.split()
    assert conffiles == ["/etc/pue-agent/agent.toml", "/etc/pue-agent/site.toml"]
    # The staging directory of the build never leaks into what is installed.
    with tarfile.open(fileobj=_data_tar(built_deb)) as data:
        bin_script = data.extractfile("./opt/pue-agent/bin/pue-agent")
        assert bin_script is not None
        assert bin_script.readline() == b"#!/opt/pue-agent/bin/python3\n"


def _data_tar(deb: Path) -> io.BytesIO:
    """The data.tar of a .deb as a file object (dpkg-deb --fsys-tarfile)."""
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True)
    return io.BytesIO(tar.stdout)


def test_install_run_upgrade_purge(built_deb: Path, exclusive_host: None, tmp_path: Path) -> None:
    started = time.monotonic()
    run(["apt-get", "install", "-y", "-q", str(built_deb)], env=APT_ENV)
    print(f"apt-get install: {time.monotonic() - started:.0f} s")
    assert installed_version() == agent.__version__

    # The installed command, from outside the checkout, with no trace of this venv.
    clean_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path), "COLUMNS": "200"}
    version = run(["/usr/bin/pue-agent", "--version"], cwd=tmp_path, env=clean_env)
    assert version.stdout == f"pue-agent {agent.__version__}\n"
    check = run(
        ["pue-agent", "check", "--config", "/etc/pue-agent/agent.toml"],
        cwd=tmp_path,
        env=clean_env,
    )
    assert check.stdout.rstrip().endswith("OK"), check.stdout
    assert "42 meters" in check.stdout

    # The installed units: verify (no warning at all) and the exposure score.
    units = [f"/lib/systemd/system/{unit}" for unit in UNITS]
    verify = run(["systemd-analyze", "verify", *units], cwd=tmp_path)
    assert verify.stderr.strip() == "", verify.stderr
    for unit in units[:2]:
        security = run(["systemd-analyze", "security", "--offline=yes", unit], cwd=tmp_path)
        score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout)
        assert score, security.stdout
        assert float(score.group(1)) <= MAX_EXPOSURE, security.stdout

    # The demo from the package: real protocols on loopback, data generated inside it.
    started = time.monotonic()
    demo = run(
        ["pue-agent", "demo", "--minutes", "0.1", "--no-report", "--state-dir",
         str(tmp_path / "demo")],
        cwd=tmp_path,
        env=clean_env,
        timeout=180,
    )  # fmt: skip
    print(f"demo from the package: {time.monotonic() - started:.0f} s")
    for expected in ("readings via snmp", "readings via mqtt", "readings via redfish",
                     "journal verified OK"):  # fmt: skip
        assert expected in demo.stdout, demo.stdout
    # Running it wrote nothing into the package's files (byte-code is shipped).
    stray = run("find /opt/pue-agent -newer /usr/bin/pue-agent -type f | head -5").stdout
    assert stray == "", stray

    # An operator's edit survives an upgrade to a rebuilt package.
    conffile = Path("/etc/pue-agent/agent.toml")
    conffile.write_text(conffile.read_text() + "# edited by the operator\n")
    upgrade = f"{agent.__version__}+test1"
    out = tmp_path / "dist"
    started = time.monotonic()
    run(
        f"PUE_AGENT_DEB_VERSION={upgrade} bash scripts/build-deb.sh --out {out}",
        cwd=ROOT,
        timeout=900,
    )
    print(f"rebuild: {time.monotonic() - started:.0f} s")
    rebuilt = out / built_deb.name.replace(agent.__version__, upgrade)
    run(["apt-get", "install", "-y", "-q", str(rebuilt)], env=APT_ENV)
    assert installed_version() == upgrade
    assert conffile.read_text().endswith("# edited by the operator\n")
    assert not list(Path("/etc/pue-agent").glob("*.dpkg-*"))
    assert run(["pue-agent", "--version"], cwd=tmp_path, env=clean_env).returncode == 0

    # Purge: nothing of the package left on the host.
    run(["apt-get", "purge", "-y", "-q", "pue-agent"], env=APT_ENV)
    assert installed_version() is None
    assert [path for path in LEFT_BEHIND if Path(path).exists()] == []
