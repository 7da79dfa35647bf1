"""The Debian package, built once per test session with the command INSTALL.md gives.

These tests install the package on this machine with apt-get (as CI does, as root) and
purge it afterwards, so the host ends as it began.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import agent
from tests.paths import ROOT
from tests.servers import require_binary

#: The build step of deploy/INSTALL.md, run from the checkout (the guide test checks it).
BUILD_COMMAND = "bash scripts/build-deb.sh"
#: Debian's non-interactive apt: no prompts, no service starts from maintainer scripts.
APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def run(
    command: list[str] | str, *, check: bool = True, timeout: float = 600, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` (a string: through bash), output captured, failing with its output."""
    args = ["bash", "-euo", "pipefail", "-c", command] if isinstance(command, str) else command
    result = subprocess.run(  # type: ignore[call-overload]
        args, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if check and result.returncode != 0:
        pytest.fail(f"{command!r} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result  # type: ignore[no-any-return]


def installed_version() -> str | None:
    """pue-agent's installed version per dpkg, or None."""
    result = run(["dpkg-query", "-W", "-f=${Status} ${Version}", "pue-agent"], check=False)
    if result.returncode != 0 or not result.stdout.startswith("install ok installed"):
        return None
    return result.stdout.split()[-1]


def purge() -> None:
    run(["apt-get", "purge", "-y", "-q", "pue-agent"], env=APT_ENV, check=False)


@pytest.fixture(scope="session")
def package_host() -> Iterator[None]:
    """Root on a Debian host without pue-agent installed; purged again at the end."""
    for binary in ("dpkg-deb", "apt-get", "systemd-analyze"):
        require_binary(binary)
    if os.geteuid() != 0:
        pytest.fail("the package tests install a .deb: run them as root (CI does)")
    if installed_version() is not None:
        pytest.fail("pue-agent is installed on this host already: apt-get purge pue-agent first")
    yield
    purge()


@pytest.fixture(scope="session")
def built_deb(package_host: None) -> Path:
    """``bash scripts/build-deb.sh`` → ``dist/pue-agent_<version>_amd64.deb``."""
    del package_host
    started = time.monotonic()
    run(BUILD_COMMAND, cwd=ROOT, timeout=900)
    print(f"build-deb: {time.monotonic() - started:.0f} s")
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    deb = ROOT / "dist" / f"pue-agent_{agent.__version__}_{arch}.deb"
    assert deb.is_file()
    return deb
