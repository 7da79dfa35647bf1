"""SNMP poll benchmark: client CPU per 8-OID poll and sustained polls/min, beside the peers.

Run: ``.venv/bin/python -m tests.bench.bench_snmp`` (about a minute; ``--quick`` halves it).

All tools poll the same net-snmp snmpd agents (``override`` lines; 8 OIDs: sysUpTime and
seven gauges, one GET PDU per poll), first over SNMPv2c, then over SNMPv3 authPriv
(SHA-256 + AES-128; collectd only offers SHA-1, so its v3 user is SHA-1 + AES-128).
Client CPU is user+system time of the polling process only (agents excluded), divided
by the polls it completed:

* ``pysnmp naive``   — pysnmp 7 hlapi ``get_cmd`` per poll, as its documentation shows
  (engine and targets reused, ``lookupMib=False``): the reference to beat.
* ``pue-agent lean`` — this collector (lean v2c/v3 codec, shared socket), readings buffered
  into reading frames (journal excluded: ``emit`` only counts rows).
* ``pue-agent pysnmp`` — this collector with ``engine = "pysnmp"`` (the reference path).
* ``snmp_exporter``  — Prometheus snmp_exporter 0.21, scraped over HTTP (its CPU only).
* ``collectd``       — collectd 5.12 snmp plugin, one 8-value Data block per host.

Then the sustained runs: 20,000 polls/min (devices x interval) for a while, over v2c and
over v3 authPriv, counting polls that started more than min(0.5 s, 10 % of the interval)
after their slot as late.

Each run of this collector is a fresh Python process (the same start for every row, and
no pysnmp left in memory from the row before). ``--baseline REV`` also runs the collector
of an earlier revision (its ``collectors/`` folder, taken with ``git archive``; the rest
of the tree is this one) against the same agents, alternating with this tree's
``--repeat`` times, so a change to the collector shows as before/after in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.paths import ROOT
from tests.servers import free_port, stop_process, wait_tcp
from tests.servers.snmp import V3User, snmpd

#: The v3 users every agent knows (benchmark keys, not secrets of any system).
V3 = V3User("bench-v3", "bench-auth-key-256", "bench-priv-key-aes", "SHA256", "AES")
V3_SHA1 = V3User("bench-v3-sha1", "bench-auth-key-sha1", "bench-priv-key-aes1", "SHA", "AES")
#: Issue 20's goal for a v2c 8-OID poll through the collector, client CPU.
GOAL_V2C_US = 100
BASE = "1.3.6.1.4.1.99999.1"
OIDS = ["1.3.6.1.2.1.1.3.0"] + [f"{BASE}.{i}.0" for i in range(1, 8)]
OVERRIDES = [(f"{BASE}.{i}.0", "integer", str(1000 + i)) for i in range(1, 8)]
PROFILE = (
    'description = "benchmark meter: 7 gauges + sysUpTime = one 8-OID GET"\nmib = "none"\n'
    f'[match]\npresent = ["{BASE}"]\n'
    + "".join(
        f'[[metrics]]\nname = "m{i}"\noid = "{BASE}.{i}.0"\npoint = "m{i}"\nquantity = "power_w"\n'
        for i in range(1, 8)
    )
)


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# -- pysnmp naive ---------------------------------------------------------------------------------


async def _pysnmp_naive(ports: list[int], polls: int, concurrency: int) -> tuple[float, float]:
    from pysnmp.hlapi.v3arch import asyncio as h  # noqa: PLC0415

    engine = h.SnmpEngine()
    auth = h.CommunityData("public", mpModel=1)
    targets = [
        await h.UdpTransportTarget.create(("127.0.0.1", p), timeout=2, retries=1) for p in ports
    ]
    objects = [h.ObjectType(h.ObjectIdentity(o)) for o in OIDS]
    ctx = h.ContextData()
    await h.get_cmd(engine, auth, targets[0], ctx, *objects, lookupMib=False)  # warm up
    done = 0

    async def worker(k: int) -> None:
        nonlocal done
        i = k
        while done < polls:
            err, status, _, vbs = await h.get_cmd(
                engine, auth, targets[i % len(targets)], ctx, *objects, lookupMib=False
            )
            assert not err and not int(status) and len(vbs) == 8
            done += 1
            i += concurrency

    cpu0, t0 = _self_cpu_s(), time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    cpu, wall = _self_cpu_s() - cpu0, time.perf_counter() - t0
    engine.close_dispatcher()
    return cpu / done * 1e6, done / wall


# -- this collector -------------------------------------------------------------------------------


class _Count:
    def __init__(self) -> None:
        self.rows = 0

    async def __call__(self, batch: Any) -> None:
        self.rows += batch.height


async def _collector(
    ports: list[int],
    profiles: Path,
    devices: int,
    interval_s: float,
    seconds: float,
    engine: str = "auto",
    warmup_s: float | None = None,
    v3: bool = False,
) -> dict[str, float]:
    from agent.plugins import CollectorContext  # noqa: PLC0415
    from agent.settings import AgentSettings  # noqa: PLC0415
    from collectors.snmp import build  # noqa: PLC0415

    secrets = profiles.parent / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "auth").write_text(V3.auth_key)
    (secrets / "priv").write_text(V3.priv_key)
    credentials: dict[str, Any] = (
        {
            "v3": {
                "user": V3.name,
                "auth_protocol": V3.auth_proto,
                "auth_key_secret": "auth",
                "priv_protocol": V3.priv_proto,
                "priv_key_secret": "priv",
            }
        }
        if v3
        else {"community": "public"}
    )
    entries = [
        {
            "name": f"dev{i:05d}",
            "host": "127.0.0.1",
            "port": ports[i % len(ports)],
            "profile": "bench-meter",
            **credentials,
        }
        for i in range(devices)
    ]
    collector = build(
        "bench",
        {
            "devices": entries,
            "engine": engine,
            "profiles_dir": str(profiles),
            "max_concurrent": 512,
            "defaults": {"interval_s": interval_s, "timeout_s": 2.0, "retries": 1},
        },
        AgentSettings(state_dir=Path(tempfile.gettempdir()), secrets_dir=secrets),
    )
    count = _Count()
    ctx = CollectorContext(name="bench", settings=collector.settings, emit=count)
    task = asyncio.create_task(collector.run(ctx))
    # Warm-up: one interval, so every device has detected its profile and is on its cadence.
    await asyncio.sleep(warmup_s if warmup_s is not None else interval_s + 1.0)
    polls0, late0 = collector.total_polls, collector.late_polls
    cpu0, t0 = _self_cpu_s(), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu, wall = _self_cpu_s() - cpu0, time.perf_counter() - t0
    polls, late = collector.total_polls - polls0, collector.late_polls - late0
    failing = sum(s.failing for s in collector.states.values())
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return {
        "cpu_us_per_poll": cpu / max(polls, 1) * 1e6,
        "polls_per_s": polls / wall,
        "polls_per_min": polls / wall * 60,
        "late_pct": 100.0 * late / max(polls, 1),
        "cpu_pct": 100.0 * cpu / wall,
        "failing": failing,
        "rows": count.rows,
    }


def _collector_process(tree: Path | None, **kwargs: Any) -> dict[str, float]:
    """:func:`_collector` in a fresh interpreter; ``tree`` holds an earlier ``collectors/``.

    The child's working directory comes first on its path, so with ``tree`` it imports
    that revision's collectors and this tree's ``agent`` and ``tests``.
    """
    kwargs["profiles"] = str(kwargs["profiles"])
    code = (
        "import asyncio, json, sys\n"
        "from pathlib import Path\n"
        "from agent.logs import configure_logging\n"
        "from tests.bench.bench_snmp import _collector\n"
        "configure_logging('warning', 'console')\n"
        "kw = json.loads(sys.argv[1]); kw['profiles'] = Path(kw['profiles'])\n"
        "print(json.dumps(asyncio.run(_collector(**kw))))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(kwargs)],
        cwd=tree or ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def _baseline_tree(rev: str, tmp: Path) -> Path:
    """``collectors/`` of revision ``rev`` in a folder of its own (read from git, no checkout)."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev, "collectors"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    tree = tmp / f"baseline-{rev.replace('/', '_')}"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    return tree


def _lean_rows(
    label: str,
    trees: list[tuple[str, Path | None]],
    repeat: int,
    **kwargs: Any,
) -> list[tuple[str, float, float, str]]:
    """One row per tree: median CPU per poll over ``repeat`` runs, trees alternating."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
    for _ in range(repeat):
        for name, tree in trees:
            runs[name].append(_collector_process(tree, **kwargs))
    rows = []
    for name, _ in trees:
        cpu = [r["cpu_us_per_poll"] for r in runs[name]]
        rate = statistics.median(r["polls_per_s"] for r in runs[name])
        late = max(r["late_pct"] for r in runs[name])
        offered = kwargs["devices"] / kwargs["interval_s"]
        spread = f" (runs {min(cpu):.0f}-{max(cpu):.0f})" if len(cpu) > 1 else ""
        rows.append(
            (
                f"{label}{name}",
                statistics.median(cpu),
                rate,
                f"<= {late:.2f} % late at {rate:.0f}/s offered {offered:.0f}/s{spread}",
            )
        )
    return rows


# -- snmp_exporter --------------------------------------------------------------------------------


def _snmp_exporter(
    ports: list[int], scrapes: int, concurrency: int, tmp: Path, *, v3: bool = False
) -> tuple[float, float]:
    exe = shutil.which("prometheus-snmp-exporter")
    assert exe, "prometheus-snmp-exporter missing: run scripts/setup.sh"
    metrics = "".join(
        f"  - name: m{i}\n    oid: {oid.rsplit('.', 1)[0]}\n    type: gauge\n    help: m{i}\n"
        for i, oid in enumerate(OIDS)
    )
    get = "".join(f"  - {oid}\n" for oid in OIDS)
    auth = (
        f"  version: 3\n  auth:\n    username: {V3.name}\n    security_level: authPriv\n"
        f"    password: {V3.auth_key}\n    auth_protocol: {V3.auth_proto}\n"
        f"    priv_protocol: {V3.priv_proto}\n    priv_password: {V3.priv_key}\n"
        if v3
        else "  version: 2\n  auth:\n    community: public\n"
    )
    conf = tmp / "snmp.yml"
    conf.write_text(f"bench:\n{auth}  get:\n{get}  metrics:\n{metrics}")
    port = free_port()
    proc = subprocess.Popen(
        [exe, f"--config.file={conf}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_tcp(port, proc=proc)
        urls = [f"http://127.0.0.1:{port}/snmp?target=127.0.0.1:{p}&module=bench" for p in ports]
        body = urllib.request.urlopen(urls[0], timeout=5).read().decode()
        assert "m7 1007" in body, body[-400:]

        def scrape(i: int) -> None:
            urllib.request.urlopen(urls[i % len(urls)], timeout=10).read()

        cpu0, t0 = _proc_cpu_s(proc.pid), time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(scrape, range(scrapes)))
        cpu, wall = _proc_cpu_s(proc.pid) - cpu0, time.perf_counter() - t0
        return cpu / scrapes * 1e6, scrapes / wall
    finally:
        stop_process(proc)


# -- collectd -------------------------------------------------------------------------------------


def _collectd(
    ports: list[int], hosts: int, interval_s: float, seconds: float, tmp: Path, *, v3: bool = False
) -> tuple[float, float]:
    exe = shutil.which("collectd") or "/usr/sbin/collectd"
    types = tmp / "types.db"
    types.write_text("bench8 " + ", ".join(f"v{i}:GAUGE:U:U" for i in range(8)) + "\n")
    csv_dir = tmp / ("csv-v3" if v3 else "csv")
    auth = (
        f'    Version 3\n    SecurityLevel "authPriv"\n    Username "{V3_SHA1.name}"\n'
        f'    AuthProtocol "SHA"\n    AuthPassphrase "{V3_SHA1.auth_key}"\n'
        f'    PrivacyProtocol "AES"\n    PrivacyPassphrase "{V3_SHA1.priv_key}"\n'
        if v3
        else '    Version 2\n    Community "public"\n'
    )
    host_blocks = "".join(
        f'  <Host "h{i}">\n    Address "127.0.0.1:{ports[i % len(ports)]}"\n{auth}'
        f'    Collect "bench"\n    Interval {interval_s}\n  </Host>\n'
        for i in range(hosts)
    )
    values = " ".join(f'"{o}"' for o in OIDS)
    conf = tmp / ("collectd-v3.conf" if v3 else "collectd.conf")
    conf.write_text(
        f'Interval {interval_s}\nTypesDB "/usr/share/collectd/types.db" "{types}"\n'
        "ReadThreads 4\nWriteThreads 1\n"
        f'LoadPlugin snmp\nLoadPlugin csv\n<Plugin csv>\n  DataDir "{csv_dir}"\n</Plugin>\n'
        f'<Plugin snmp>\n  <Data "bench">\n    Type "bench8"\n    Table false\n'
        f'    Instance "meter"\n    Values {values}\n  </Data>\n{host_blocks}</Plugin>\n'
    )
    proc = subprocess.Popen(
        [exe, "-f", "-C", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        time.sleep(interval_s * 2 + 0.5)
        assert proc.poll() is None, "collectd exited (config?)"
        lines0 = _csv_lines(csv_dir)
        cpu0, t0 = _proc_cpu_s(proc.pid), time.perf_counter()
        time.sleep(seconds)
        cpu, wall = _proc_cpu_s(proc.pid) - cpu0, time.perf_counter() - t0
        polls = _csv_lines(csv_dir) - lines0
        assert polls > 0, "collectd wrote no values"
        return cpu / polls * 1e6, polls / wall
    finally:
        stop_process(proc)


def _csv_lines(folder: Path) -> int:
    return (
        sum(max(0, sum(1 for _ in p.open()) - 1) for p in folder.rglob("*") if p.is_file())
        if folder.exists()
        else 0
    )


# -- main -----------------------------------------------------------------------------------------


def main() -> None:
    """Run every measurement and print one table per SNMP version."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="Shorter runs.")
    parser.add_argument("--agents", type=int, default=2, help="snmpd processes.")
    parser.add_argument("--only", choices=["all", "v2c", "v3"], default="all")
    parser.add_argument(
        "--baseline", metavar="REV", help="Also run the collector of git revision REV."
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="Runs per collector row (median shown)."
    )
    args = parser.parse_args()
    from agent.logs import configure_logging  # noqa: PLC0415

    configure_logging("warning", "console")
    k = 0.5 if args.quick else 1.0
    tmp = Path(tempfile.mkdtemp(prefix="bench-snmp-"))
    profiles = tmp / "profiles"
    profiles.mkdir()
    (profiles / "bench-meter.toml").write_text(PROFILE)
    trees: list[tuple[str, Path | None]] = [("", None)]
    if args.baseline:
        trees = [
            (f" @{args.baseline}", _baseline_tree(args.baseline, tmp)),
            (" (this tree)", None),
        ]
    rows: list[tuple[str, float, float, str]] = []
    rows3: list[tuple[str, float, float, str]] = []
    sustained: dict[str, dict[str, float]] = {}
    from contextlib import ExitStack  # noqa: PLC0415

    with ExitStack() as stack:
        ports = [
            stack.enter_context(snmpd(OVERRIDES, users=[V3, V3_SHA1])).port
            for _ in range(args.agents)
        ]
        if args.only in ("all", "v2c"):
            cpu, rate = asyncio.run(_pysnmp_naive(ports, int(2000 * k), 32))
            rows.append(("pysnmp naive (get_cmd)", cpu, rate, "baseline"))
            rows += _lean_rows(
                "pue-agent lean v2c",
                trees,
                args.repeat,
                ports=ports,
                profiles=profiles,
                devices=400,
                interval_s=0.5,
                seconds=6 * k,
            )
            r = _collector_process(
                None,
                ports=ports,
                profiles=profiles,
                devices=100,
                interval_s=0.5,
                seconds=6 * k,
                engine="pysnmp",
            )
            rows.append(
                (
                    "pue-agent pysnmp path",
                    r["cpu_us_per_poll"],
                    r["polls_per_s"],
                    f"{r['late_pct']:.2f} % late, offered 200/s",
                )
            )
            cpu, rate = _snmp_exporter(ports, int(2000 * k), 16, tmp)
            rows.append(("snmp_exporter 0.21", cpu, rate, "HTTP scrape per poll"))
            cpu, rate = _collectd(ports, 200, 1.0, 8 * k, tmp)
            rows.append(("collectd 5.12 snmp", cpu, rate, "200 hosts every 1 s"))
            sustained["v2c"] = _collector_process(
                None, ports=ports, profiles=profiles, devices=1000, interval_s=3.0, seconds=20 * k
            )
        if args.only in ("all", "v3"):
            rows3 += _lean_rows(
                "pue-agent lean v3",
                trees,
                args.repeat,
                ports=ports,
                profiles=profiles,
                devices=400,
                interval_s=0.5,
                seconds=6 * k,
                v3=True,
            )
            r = _collector_process(
                None,
                ports=ports,
                profiles=profiles,
                devices=100,
                interval_s=0.5,
                seconds=6 * k,
                engine="pysnmp",
                v3=True,
            )
            rows3.append(
                (
                    "pue-agent pysnmp path v3",
                    r["cpu_us_per_poll"],
                    r["polls_per_s"],
                    f"{r['late_pct']:.2f} % late, offered 200/s",
                )
            )
            cpu, rate = _snmp_exporter(ports, int(1000 * k), 16, tmp, v3=True)
            rows3.append(("snmp_exporter 0.21 v3", cpu, rate, "HTTP scrape per poll"))
            cpu, rate = _collectd(ports, 200, 1.0, 8 * k, tmp, v3=True)
            rows3.append(("collectd 5.12 snmp v3", cpu, rate, "SHA-1 + AES-128 user"))
            sustained["v3"] = _collector_process(
                None,
                ports=ports,
                profiles=profiles,
                devices=1000,
                interval_s=3.0,
                seconds=20 * k,
                v3=True,
                warmup_s=4.0,
            )
    for title, table in (("SNMPv2c", rows), ("SNMPv3 authPriv SHA-256 + AES-128", rows3)):
        if not table:
            continue
        print(f"\n{title}\n{'tool':28} {'CPU us/poll':>12} {'polls/s':>9}  note")
        for name, cpu, rate, note in table:
            print(f"{name:28} {cpu:12.0f} {rate:9.0f}  {note}")
    for version, r in sustained.items():
        print(
            f"\nsustained {version}: 1000 devices every 3 s (20,000 polls/min offered): "
            f"{r['polls_per_min']:,.0f} polls/min done, {r['late_pct']:.2f} % late, "
            f"{r['cpu_us_per_poll']:.0f} us CPU/poll, {r['cpu_pct']:.1f} % of a core, "
            f"{r['failing']:.0f} devices failing"
        )

    def cpu_of(table: list[tuple[str, float, float, str]], prefix: str) -> float:
        # The last matching row: with --baseline, this tree's comes after the baseline's.
        return [cpu for name, cpu, _, _ in table if name.startswith(prefix)][-1]

    if rows:
        lean = cpu_of(rows, "pue-agent lean")
        print(
            f"lean v2c vs pysnmp naive: {cpu_of(rows, 'pysnmp naive') / lean:.1f}x less CPU "
            f"per poll; vs snmp_exporter: {cpu_of(rows, 'snmp_exporter') / lean:.1f}x less; "
            f"goal <= {GOAL_V2C_US} us: {'met' if lean <= GOAL_V2C_US else 'NOT met'}"
        )
    if rows3:
        lean = cpu_of(rows3, "pue-agent lean")
        exporter = cpu_of(rows3, "snmp_exporter")
        print(
            f"lean v3 vs pysnmp path v3: {cpu_of(rows3, 'pue-agent pysnmp') / lean:.1f}x less "
            f"CPU per poll; vs snmp_exporter v3: {exporter / lean:.1f}x less; "
            f"vs collectd v3: {cpu_of(rows3, 'collectd') / lean:.2f}x; goal <= snmp_exporter: "
            f"{'met' if lean <= exporter else 'NOT met'}"
        )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
