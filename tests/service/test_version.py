"""One version everywhere: ``agent.__version__``, the package metadata, the CLI and the API."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import httpx

import agent
from tests.paths import ROOT
from tests.service.conftest import Tokens, api_settings, running


def test_metadata_reads_the_package_version() -> None:
    # pyproject.toml declares the version dynamic from agent.__version__: an editable
    # install's metadata must agree, or the .deb and the report would name another build.
    assert metadata.version("pue-agent") == agent.__version__


def test_cli_prints_the_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agent", "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"pue-agent {agent.__version__}\n"


def test_api_reports_the_version(tmp_path: Path, tokens: Tokens) -> None:
    for server in running(api_settings(tmp_path, tokens)):
        health = httpx.get(server.url + "/healthz", timeout=5)
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "version": agent.__version__}
        spec = httpx.get(server.url + "/openapi.json", timeout=5).json()
        assert spec["info"]["version"] == agent.__version__
        assert "version" in spec["components"]["schemas"]["Health"]["required"]
