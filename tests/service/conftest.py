"""Helpers for the service tests: tokens in a secrets directory, an agent run in a thread."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.pipeline import Agent, build_agent
from agent.service import AgentService
from agent.settings import AgentSettings, CollectorEntry, load_settings
from collectors.sim.simulator import SiteSimulator, site_table
from tests.servers import free_port

SITE_PDUS = 4


@dataclass
class Tokens:
    ops: str = field(default_factory=lambda: "ops-" + secrets.token_urlsafe(24))
    auditor: str = field(default_factory=lambda: "aud-" + secrets.token_urlsafe(24))

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "api_token_ops").write_text(self.ops + "\n", encoding="utf-8")
        (folder / "api_token_auditor").write_text(self.auditor + "\n", encoding="utf-8")
        return folder

    def header(self, role: str) -> dict[str, str]:
        token = {"ops": self.ops, "auditor": self.auditor}.get(role)
        return {} if token is None else {"Authorization": f"Bearer {token}"}


def sim_site() -> dict[str, Any]:
    """The site model matching a small ``sim`` collector."""
    return site_table(SiteSimulator(pdus=SITE_PDUS))


def api_settings(tmp: Path, tokens: Tokens, **api: Any) -> AgentSettings:
    """Settings of an agent with one fast sim collector, a site model and the API on."""
    return load_settings(
        None,
        state_dir=tmp / "state",
        secrets_dir=tokens.write(tmp / "secrets"),
        site=sim_site(),
        collectors=[
            CollectorEntry(kind="sim", name="sim-a", pdus=SITE_PDUS, interval_s=10, speed=100)
        ],
        api={"enabled": True, "listen": "127.0.0.1", "port": free_port(), **api},
    )


@dataclass
class ThreadedAgent:
    """A real agent (pipeline + API) running on its own event loop in a thread."""

    settings: AgentSettings
    agent: Agent = field(init=False)
    loop: asyncio.AbstractEventLoop | None = None
    thread: threading.Thread | None = None
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.agent = build_agent(self.settings)

    @property
    def url(self) -> str:
        api = self.settings.api
        scheme = "https" if api.tls_cert_file else "http"
        return f"{scheme}://127.0.0.1:{api.port}"

    def start(self) -> ThreadedAgent:
        ready = threading.Event()

        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            ready.set()
            await AgentService(self.agent, install_signals=False).serve()

        def target() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=target, name="agent", daemon=True)
        self.thread.start()
        assert ready.wait(10)
        return self

    def wait_ready(self, timeout_s: float = 20.0, **client: Any) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.error is None, self.error
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1, **client).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError("the agent's API did not become ready")

    def stop(self) -> None:
        if self.loop is not None and self.thread is not None:
            self.loop.call_soon_threadsafe(self.agent.stop)
            self.thread.join(30)
            assert not self.thread.is_alive()
        assert self.error is None, self.error


@pytest.fixture
def tokens() -> Tokens:
    return Tokens()


def running(settings: AgentSettings, **client: Any) -> Iterator[ThreadedAgent]:
    """Start an agent in a thread, wait until /readyz answers 200, stop it afterwards."""
    threaded = ThreadedAgent(settings).start()
    try:
        threaded.wait_ready(**client)
        yield threaded
    finally:
        threaded.stop()
