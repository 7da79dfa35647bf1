"""The Debian package, built once per test session with the command INSTALL.md gives.

These tests install the package on this machine with apt-get (as CI does, as root) and
purge it afterwards, so the host ends as it began. The suite runs on several xdist workers
(processes): a test that installs the package, and the build, hold :func:`host_lock`, so
two of them never change the host at once; the package is built once per test run.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import agent
from agent.settings import CONFIG_ENV
from tests.paths import ROOT
from tests.servers import require_binary

#: The build step of deploy/INSTALL.md, run from the checkout (the guide test checks it).
BUILD_COMMAND = "bash scripts/build-deb.sh"
#: Debian's non-interactive apt: no prompts, no service starts from maintainer scripts; and the
#: installed package's default config in force again (tests/conftest.py turns it off).
APT_ENV = {
    **{name: value for name, value in os.environ.items() if name != CONFIG_ENV},
    "DEBIAN_FRONTEND": "noninteractive",
}


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


#: One lock for every worker of a test run (and any other run on this host).
HOST_LOCK = Path(tempfile.gettempdir()) / "pue-agent-package-tests.lock"


@contextmanager
def host_lock() -> Iterator[None]:
    """Hold the host: no other test installs, purges or builds the package meanwhile."""
    with HOST_LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _not_installed() -> None:
    if installed_version() is not None:
        pytest.fail("pue-agent is installed on this host already: apt-get purge pue-agent first")


@pytest.fixture(scope="session")
def package_host() -> Iterator[None]:
    """Root on a Debian host without pue-agent installed; purged again at the end."""
    for binary in ("dpkg-deb", "apt-get", "systemd-analyze"):
        require_binary(binary)
    if os.geteuid() != 0:
        pytest.fail("the package tests install a .deb: run them as root (CI does)")
    with host_lock():
        _not_installed()
    yield
    with host_lock():
        purge()


@pytest.fixture
def exclusive_host(package_host: None) -> Iterator[None]:
    """The host for one test that installs the package: locked, and clean before and after."""
    del package_host
    with host_lock():
        _not_installed()
        try:
            yield
        finally:
            purge()


@pytest.fixture(scope="session")
def built_deb(package_host: None, request: pytest.FixtureRequest) -> Path:
    """``bash scripts/build-deb.sh`` → ``dist/pue-agent_<version>_amd64.deb``, once per run."""
    del package_host
    # xdist gives every worker of one run the same id; without xdist the session is the run.
    workerinput = getattr(request.config, "workerinput", None)
    run_id = workerinput["testrunuid"] if workerinput else uuid.uuid4().hex
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    deb = ROOT / "dist" / f"pue-agent_{agent.__version__}_{arch}.deb"
    stamp = ROOT / "dist" / f".built-by-test-run-{run_id}"
    with host_lock():
        if not stamp.is_file():
            for old in (ROOT / "dist").glob(".built-by-test-run-*"):
                old.unlink()
            started = time.monotonic()
            run(BUILD_COMMAND, cwd=ROOT, timeout=900)
            print(f"build-deb: {time.monotonic() - started:.0f} s")
            stamp.touch()
    assert deb.is_file()
    return deb
