"""MQTT benchmark: messages/s from broker to journal, against a bare aiomqtt loop and mosquitto_sub.

Method: each subscriber first opens a persistent session (fixed client id) and leaves; N
messages (~35-byte JSON ``{"seq":…,"p":…}``) are then published while it is away, so the
broker queues them (``queue_qos0_messages true`` queues QoS 0 too); the clock runs from the
subscriber's (re)connect until it has all N — for the collector, until all N readings are
fsynced in the journal. This measures the receive path alone, with no publisher competing
for the 2 cores. A second, live scenario shows QoS 0 loss when a subscriber falls behind a
broker with mosquitto's default queue limit (1000) and what the collector detects.

Run: ``.venv/bin/python -m tests.bench.bench_mqtt [N] [--profile] [--no-live]``; ``--profile``
also runs the QoS 0 collector session under cProfile and prints where the receive path spends
its time; ``--no-live`` skips the live loss scenario.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt

from agent.journal import Journal
from agent.pipeline import Agent
from agent.settings import load_settings
from collectors.mqtt import build
from tests.servers.mosquitto import Mosquitto, start_mosquitto

_ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
N = int(_ARGS[0]) if _ARGS else 30_000
PROFILE = "--profile" in sys.argv
LIVE = "--no-live" not in sys.argv
TOPIC = "bench/m1/power"

_PUBLISHER = r"""
import sys, json, paho.mqtt.client as paho
port, n, qos = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-pub")
c.max_inflight_messages_set(1000); c.max_queued_messages_set(0)
c.connect("127.0.0.1", port); c.loop_start()
infos = [c.publish("bench/m1/power", '{"seq":%d,"p":%.1f}' % (i, 1000 + i % 100), qos=qos)
         for i in range(n)]
for info in infos: info.wait_for_publish(60)
c.disconnect(); c.loop_stop()
"""


def publish(port: int, n: int, qos: int) -> None:
    subprocess.run([sys.executable, "-c", _PUBLISHER, str(port), str(n), str(qos)], check=True)


def bench_mosquitto_sub(broker: Mosquitto, qos: int) -> float:
    base = [
        "mosquitto_sub",
        "-h",
        broker.host,
        "-p",
        str(broker.port),
        "-i",
        f"ms{qos}",
        "-c",
        "-q",
        str(qos),
        "-t",
        TOPIC,
    ]
    subprocess.run([*base, "-E"], check=True)
    publish(broker.port, N, qos)
    start = time.perf_counter()
    subprocess.run([*base, "-C", str(N)], check=True, stdout=subprocess.DEVNULL)
    return N / (time.perf_counter() - start)


async def _aiomqtt_session(broker: Mosquitto, qos: int, count: int) -> None:
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=f"aio{qos}", clean_session=False
    ) as client:
        if count == 0:
            await client.subscribe(TOPIC, qos)
            return
        seen = 0
        async for _ in client.messages:
            seen += 1
            if seen == count:
                return


def bench_aiomqtt(broker: Mosquitto, qos: int) -> float:
    asyncio.run(_aiomqtt_session(broker, qos, 0))
    publish(broker.port, N, qos)
    start = time.perf_counter()
    asyncio.run(_aiomqtt_session(broker, qos, N))
    return N / (time.perf_counter() - start)


def _mapping(folder: Path) -> Path:
    path = folder / "bench.toml"
    path.write_text(
        '[[rules]]\ntopic = "bench/+/power"\nsegments = "_/device"\nsequence_path = "seq"\n'
        'fields = [{ path = "p", point = "power", quantity = "power_w" }]\n',
        encoding="utf-8",
    )
    return path


async def _collector_session(
    broker: Mosquitto, folder: Path, qos: int, count: int, **extra: object
) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) until ``count`` readings are journalled."""
    settings = load_settings(None, state_dir=folder / f"state{qos}")
    options = {
        "host": broker.host,
        "port": broker.port,
        "mappings": [str(_mapping(folder))],
        "qos": qos,
        "client_id": f"col{qos}",
        **extra,
    }
    collector = build("bench", options, settings)
    agent = Agent(
        settings=settings,
        site=None,
        collectors=[collector],
        consumers=[],
        journal=Journal(settings.journal_path),
    )
    start, cpu_start = time.perf_counter(), time.process_time()
    task = asyncio.create_task(agent.run(install_signals=False))
    while collector.subscribed == 0 or agent.committed_readings < count:
        await asyncio.sleep(0.005)
        if task.done():
            task.result()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    agent.stop()
    await task
    return elapsed, cpu


def bench_collector(broker: Mosquitto, folder: Path, qos: int) -> tuple[float, float]:
    """(messages/s wall, CPU microseconds per message): CPU time holds up on a busy machine."""
    asyncio.run(_collector_session(broker, folder, qos, 0))
    publish(broker.port, N, qos)
    elapsed, cpu = asyncio.run(_collector_session(broker, folder, qos, N))
    return N / elapsed, cpu / N * 1e6


def profile_collector(broker: Mosquitto, folder: Path) -> None:
    """The QoS 0 collector session under cProfile (main thread: receive, decode, emit)."""
    asyncio.run(_collector_session(broker, folder, 0, 0, client_id="prof"))
    publish(broker.port, N, 0)
    profiler = cProfile.Profile()
    profiler.enable()
    elapsed, _ = asyncio.run(_collector_session(broker, folder, 0, N, client_id="prof"))
    profiler.disable()
    print(f"profile (QoS 0, {N / elapsed:,.0f} msg/s under cProfile), top by own time:")
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(12)


async def _live_loss(broker: Mosquitto, folder: Path) -> dict[str, int]:
    settings = load_settings(None, state_dir=folder / "live")
    options = {
        "host": broker.host,
        "port": broker.port,
        "mappings": [str(_mapping(folder))],
        "qos": 0,
        "client_id": "live",
        "persistent_session": False,
    }
    collector = build("bench-live", options, settings)
    agent = Agent(
        settings=settings,
        site=None,
        collectors=[collector],
        consumers=[],
        journal=Journal(settings.journal_path),
    )
    task = asyncio.create_task(agent.run(install_signals=False))
    while collector.subscribed == 0:
        await asyncio.sleep(0.01)
    # A sequence-numbered tail, published after the burst, bounds the gap count.
    await asyncio.to_thread(publish, broker.port, 4 * N, 0)
    # Drain until nothing new for 1.5 s (also lets $SYS, sys_interval 1, report).
    last, still = -1, 0.0
    while still < 1.5:
        await asyncio.sleep(0.25)
        now = collector.stats["accepted"]
        still = still + 0.25 if now == last else 0.0
        last = now
    agent.stop()
    await task
    return dict(collector.stats)


def main() -> None:
    print(f"MQTT receive path, {N} messages of ~35 B JSON, mosquitto 2.0 on loopback")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        broker = start_mosquitto(
            folder / "broker",
            persistence=False,
            max_queued_messages=10 * N,
            extra_config=["queue_qos0_messages true", "sys_interval 1"],
        )
        try:
            for qos in (0, 1):
                sub = bench_mosquitto_sub(broker, qos)
                aio = bench_aiomqtt(broker, qos)
                col, cpu_us = bench_collector(broker, folder, qos)
                print(
                    f"QoS {qos}: mosquitto_sub {sub:>9,.0f} msg/s | bare aiomqtt {aio:>8,.0f} msg/s"
                    f" | collector (map+journal+fsync, ack after fsync) {col:>8,.0f} msg/s"
                    f" = {col / aio:.2f}x bare aiomqtt = {col / sub:.2f}x mosquitto_sub"
                    f" | collector CPU {cpu_us:.1f} us/msg"
                )
            if PROFILE:
                profile_collector(broker, folder)
        finally:
            broker.stop()
        if not LIVE:
            return
        # Live QoS 0 with mosquitto's default per-client queue (1000): the broker drops.
        broker = start_mosquitto(
            folder / "broker2",
            persistence=False,
            max_queued_messages=1000,
            extra_config=["sys_interval 1"],
        )
        try:
            stats = asyncio.run(_live_loss(broker, folder))
            dropped_log = broker.log_text().count("Outgoing messages are being dropped")
        finally:
            broker.stop()
        sent = 4 * N
        print(
            f"Live QoS 0, {sent} published at full speed, broker max_queued_messages 1000: "
            f"received {stats.get('accepted', 0):,}, lost by sequence gaps "
            f"{stats.get('lost', 0):,}, broker $SYS dropped {stats.get('broker_dropped', 0):,}, "
            f"received+gaps = {stats.get('accepted', 0) + stats.get('lost', 0):,} of {sent:,}; "
            f"broker log 'Outgoing messages are being dropped' x{dropped_log}"
        )
    print(json.dumps({"n": N}))


if __name__ == "__main__":
    main()
