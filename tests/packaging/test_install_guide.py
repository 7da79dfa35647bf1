"""deploy/INSTALL.md cannot rot: its ```bash blocks run here, in order, as root.

The guide's edge-room example gets real devices on loopback: net-snmp's snmpd answering
as an APC rack PDU over SNMPv3 with the keys the guide's secrets step wrote, and a
mosquitto broker for the MQTT collector. The one step an operator does by hand (editing
addresses) is done here by swapping the example's addresses for the loopback ones. Where
systemd is not PID 1 (a container), the ``systemctl`` lines are replaced by what the unit
would do: the agent started directly with the credentials directory, stopped at the end.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.packaging.conftest import APT_ENV, BUILD_COMMAND, installed_version, run
from tests.paths import ROOT
from tests.servers import stop_process
from tests.servers.mosquitto import start_mosquitto
from tests.servers.snmp import V3User, snmpd

pytestmark = pytest.mark.slow

GUIDE = ROOT / "deploy" / "INSTALL.md"
CONFIG = Path("/etc/pue-agent/agent.toml")
CREDSTORE = Path("/etc/credstore")
DROP_IN = Path("/etc/systemd/system/pue-agent.service.d")
#: What this test creates outside the package, removed again at the end.
SECRETS = ["api_token_ops", "api_token_auditor", "snmp_auth_key", "snmp_priv_key"]
#: systemd manages services only when it is PID 1 (sd_booted(3)).
SYSTEMD = Path("/run/systemd/system").is_dir()

#: An APC Rack PDU 2G as the apc-rpdu2 profile finds it: sysObjectID, device power
#: (hundredths of kW) and energy (tenths of kWh) of PDU 1.
APC_PDU = [
    ("1.3.6.1.2.1.1.2.0", "object_id", "1.3.6.1.4.1.318.1.3.4.5"),
    ("1.3.6.1.4.1.318.1.1.26.4.3.1.5.1", "integer", "123"),
    ("1.3.6.1.4.1.318.1.1.26.4.3.1.9.1", "integer", "45678"),
]


def _bash_blocks(text: str) -> list[str]:
    """The guide's ```bash blocks, in order (```sh and others are for reading only)."""
    return re.findall(r"^```bash\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)


@pytest.fixture
def leave_host_clean(exclusive_host: None) -> Iterator[ExitStack]:
    """Undo what the guide creates outside the package (and purge it if a step failed)."""
    del exclusive_host
    existed = CREDSTORE.exists()
    with ExitStack() as stack:
        yield stack
    if installed_version() is not None:
        run(["apt-get", "purge", "-y", "-q", "pue-agent"], env=APT_ENV, check=False)
    for name in SECRETS:
        (CREDSTORE / name).unlink(missing_ok=True)
    if not existed and CREDSTORE.exists() and not any(CREDSTORE.iterdir()):
        CREDSTORE.rmdir()
    run(["rm", "-rf", str(DROP_IN)])


def _swap_addresses(snmp_port: int, mqtt_port: int) -> None:
    """The operator's edit: the example's device addresses → the loopback test devices."""
    text = CONFIG.read_text(encoding="utf-8")
    edits = [
        ('host = "10.20.0.11"', f'host = "127.0.0.1"\nport = {snmp_port}'),
        ('host = "10.20.0.12"', f'host = "127.0.0.1"\nport = {snmp_port}'),
        ('host = "127.0.0.1"         #', f'port = {mqtt_port}\nhost = "127.0.0.1"  #'),
        # Poll every 2 s rather than 30, so the test sees readings soon.
        ("interval_s = 30", "interval_s = 2"),
    ]
    for old, new in edits:
        assert text.count(old) == 1, f"the edge-room example no longer has {old!r}"
        text = text.replace(old, new)
    CONFIG.write_text(text, encoding="utf-8")


def _metric(text: str, name: str, device: str) -> float:
    match = re.search(rf'^{name}{{collector="pdus",device="{device}"}} ([0-9.e+]+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_every_step_of_the_install_guide_runs(
    built_deb: Path, leave_host_clean: ExitStack, tmp_path: Path
) -> None:
    blocks = _bash_blocks(GUIDE.read_text(encoding="utf-8"))
    firsts = [block.splitlines()[0] for block in blocks]
    assert firsts == [
        BUILD_COMMAND,
        "apt-get install -y ./dist/pue-agent_*_amd64.deb",
        "install -d -m 0700 /etc/credstore",
        "install -d /etc/systemd/system/pue-agent.service.d",
        "cp /usr/share/doc/pue-agent/deploy/edge-room/agent.toml /etc/pue-agent/agent.toml",
        "CREDENTIALS_DIRECTORY=/etc/credstore pue-agent check --config /etc/pue-agent/agent.toml",
        "systemctl daemon-reload",
        "systemd-run --wait --pipe -p DynamicUser=yes -p User=pue-agent "
        "-p StateDirectory=pue-agent \\",
        "curl -fsS http://127.0.0.1:9847/readyz",
        "systemctl disable --now pue-agent.service pue-agent-report.timer",
    ]  # fmt: skip
    build, install, secrets, drop_in, config, check, start, keys, see, remove = blocks
    # Step 1 is the session's build (the same command, once per session): it made this.
    assert build.strip() == BUILD_COMMAND
    assert built_deb.parent == ROOT / "dist"
    stack = leave_host_clean
    agent_proc: list[subprocess.Popen[bytes]] = []

    def step(block: str) -> str:
        if not SYSTEMD:
            block = _without_systemd(block)
        return run(block, cwd=ROOT, env=APT_ENV, timeout=600).stdout

    out = step(install)
    assert re.fullmatch(r"pue-agent \S+\n", out.splitlines(keepends=True)[-1])
    step(secrets)
    assert sorted(p.name for p in CREDSTORE.iterdir() if p.name in SECRETS) == sorted(SECRETS)
    assert oct(CREDSTORE.stat().st_mode & 0o777) == "0o700"
    step(drop_in)
    assert "LoadCredential=snmp_priv_key" in (DROP_IN / "credentials.conf").read_text()

    # The devices the example names, on loopback, with the keys the guide wrote.
    user = V3User(
        "pue-agent",
        (CREDSTORE / "snmp_auth_key").read_text(),
        (CREDSTORE / "snmp_priv_key").read_text(),
        "SHA256",
        "AES",
    )
    snmp = stack.enter_context(snmpd(APC_PDU, users=[user]))
    broker = start_mosquitto(tmp_path / "mqtt")
    stack.callback(broker.stop)

    step(config)
    _swap_addresses(snmp.port, broker.port)
    out = step(check)
    assert out.rstrip().endswith("OK"), out
    assert "collector pdus: snmp: 2 device(s)" in out
    for value in [(CREDSTORE / name).read_text() for name in SECRETS]:
        assert value not in out

    if SYSTEMD:
        step(start)
    else:
        # What the unit does: run the agent with the credentials directory (as root here).
        proc = subprocess.Popen(
            ["/usr/bin/pue-agent", "run", "--config", str(CONFIG)],
            env={**APT_ENV, "CREDENTIALS_DIRECTORY": str(CREDSTORE)},
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "agent.log").open("wb"),
        )
        agent_proc.append(proc)
        stack.callback(stop_process, proc)
    out = step(keys)
    assert "private key:" in out, out
    key = Path("/var/lib/pue-agent/keys/report-signing.key")
    assert oct(key.stat().st_mode & 0o777) == "0o600"

    # The PDUs are polled over SNMPv3 before the guide looks (interval_s = 2 after the edit).
    token = (CREDSTORE / "api_token_ops").read_text()
    deadline = time.monotonic() + 60
    metrics = ""
    while time.monotonic() < deadline:
        try:
            metrics = httpx.get(
                "http://127.0.0.1:9847/metrics",
                headers={"Authorization": f"Bearer {token}"},
                timeout=2,
            ).text
        except httpx.TransportError:
            metrics = ""
        # Both PDUs: their first polls are spread over the interval, not simultaneous.
        if all(_metric(metrics, "pue_agent_polls_total", pdu) >= 2 for pdu in ("pdu-a", "pdu-b")):
            break
        time.sleep(0.5)
    log = (tmp_path / "agent.log").read_text() if not SYSTEMD else ""
    assert _metric(metrics, "pue_agent_polls_total", "pdu-a") >= 2, metrics + log
    assert _metric(metrics, "pue_agent_poll_failures_total", "pdu-a") == 0, metrics + log
    out = step(see)
    assert '"ready": true' in out or '"ready":true' in out, out
    assert "pue_agent_journal_readings_total" in out
    assert token not in out

    if not SYSTEMD:
        agent_proc[0].send_signal(signal.SIGTERM)
        assert agent_proc[0].wait(timeout=60) == 0
    step(remove)
    assert installed_version() is None
    for path in ("/opt/pue-agent", "/etc/pue-agent", "/var/lib/pue-agent", str(DROP_IN)):
        assert not Path(path).exists(), path
    # The operator's secrets stay: they are not the package's.
    assert (CREDSTORE / "snmp_priv_key").exists()


def _without_systemd(block: str) -> str:
    """``block`` as it runs where systemd is not PID 1 (the test starts and stops the agent).

    ``systemctl`` lines are left out; ``systemd-run … \\`` is left out so that the command
    it wraps runs directly (as root: the state directory is root's here).
    """
    lines = block.splitlines()
    kept = []
    skip_next_continuation = False
    for line in lines:
        if line.startswith("systemctl "):
            continue
        if line.startswith("systemd-run ") and line.endswith("\\"):
            skip_next_continuation = True
            continue
        kept.append(line.strip() if skip_next_continuation else line)
        skip_next_continuation = False
    return "\n".join(kept) + "\n" if kept else "true\n"
