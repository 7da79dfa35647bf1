"""Start a real ``nats-server`` (one node, or a three-node cluster) with JetStream on loopback.

Usage::

    cluster = start_nats(tmp_path, nodes=3)
    try:
        ...  # connect to cluster.urls (every node's client URL)
        cluster.kill(0)  # SIGKILL node 0; its store stays for restart(0)
        cluster.restart(0)
    finally:
        cluster.stop()

Each node gets its own JetStream store directory under ``tmp_dir``, a client port and
(in a cluster) a route port picked now; the routes list every node, so any two nodes
that are up form the cluster's meta and stream quorum (R3 survives one node down).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import free_port, require_binary, stop_process, wait_tcp

__all__ = ["NatsCluster", "start_nats"]


@dataclass
class NatsCluster:
    """Running ``nats-server`` nodes; ``urls`` are their client URLs, in node order."""

    binary: str
    config_files: list[Path]
    client_ports: list[int]
    log_files: list[Path]
    procs: list[subprocess.Popen[bytes] | None] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        """Every node's client URL (``nats://127.0.0.1:<port>``)."""
        return [f"nats://127.0.0.1:{port}" for port in self.client_ports]

    def kill(self, node: int) -> None:
        """Kill one node hard (SIGKILL), keeping its store for :meth:`restart`."""
        proc = self.procs[node]
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self.procs[node] = None

    def restart(self, node: int) -> None:
        """Start a stopped or killed node again with the same ports and store."""
        self.kill(node)
        self.procs[node] = _launch(self.binary, self.config_files[node], self.client_ports[node])

    def stop(self) -> None:
        """Stop every node (SIGTERM, reaped)."""
        for proc in self.procs:
            if proc is not None:
                stop_process(proc)
        self.procs = [None for _ in self.procs]

    def log_text(self, node: int) -> str:
        """One node's log so far (for post-mortems)."""
        try:
            return self.log_files[node].read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""


def _launch(binary: str, config_file: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [binary, "-c", str(config_file)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_tcp(port, timeout_s=15.0, proc=proc)
    except BaseException:
        stop_process(proc)
        raise
    return proc


def start_nats(
    tmp_dir: Path, *, nodes: int = 1, extra: str = "", files: dict[str, str] | None = None
) -> NatsCluster:
    """Start ``nodes`` JetStream nodes (1, or 3 as a cluster) on loopback ports picked now.

    Args:
        tmp_dir: Where the configs, logs and stores go.
        nodes: 1, or 3 for a cluster.
        extra: Configuration text added to every node's config (e.g. ``include users.conf``).
        files: Files to write next to the configs (name -> text), for ``include``.

    Fails the test (never skips) if ``nats-server`` is not installed.
    """
    binary = require_binary("nats-server")
    tmp_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (files or {}).items():
        (tmp_dir / name).write_text(text, encoding="utf-8")
    client_ports = [free_port() for _ in range(nodes)]
    route_ports = [free_port() for _ in range(nodes)]
    configs: list[Path] = []
    logs: list[Path] = []
    for i in range(nodes):
        store = tmp_dir / f"n{i}" / "jetstream"
        store.mkdir(parents=True, exist_ok=True)
        log = tmp_dir / f"n{i}.log"
        text = (
            f'server_name: "n{i}"\n'
            f"listen: 127.0.0.1:{client_ports[i]}\n"
            f'log_file: "{log}"\n'
            f'jetstream {{ store_dir: "{store}", max_memory_store: 64MB, max_file_store: 1GB }}\n'
        )
        if nodes > 1:
            routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in route_ports)
            text += (
                f'cluster {{ name: "pue-test", listen: 127.0.0.1:{route_ports[i]}, '
                f"routes: [{routes}] }}\n"
            )
        text += extra
        config = tmp_dir / f"n{i}.conf"
        config.write_text(text, encoding="utf-8")
        configs.append(config)
        logs.append(log)
    cluster = NatsCluster(binary, configs, client_ports, logs)
    try:
        for i in range(nodes):
            cluster.procs.append(_launch(binary, configs[i], client_ports[i]))
    except BaseException:
        cluster.stop()
        raise
    if nodes > 1:
        _wait_for_meta_leader(cluster)
    return cluster


def _wait_for_meta_leader(cluster: NatsCluster, timeout_s: float = 20.0) -> None:
    """Wait until the cluster elected a JetStream meta leader (streams can be created)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(
            "JetStream cluster new metadata leader" in cluster.log_text(i)
            or "Self is new JetStream cluster metadata leader" in cluster.log_text(i)
            for i in range(len(cluster.procs))
        ):
            return
        time.sleep(0.1)
    raise TimeoutError(f"no JetStream meta leader after {timeout_s} s")
