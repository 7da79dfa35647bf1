"""The README's main command end to end: devices behind real protocols, a verified report."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import polars as pl

from agent.journal import Journal
from agent.store import IntervalStore
from tests.paths import FIXTURES, ROOT


def test_demo_one_minute_over_snmp_mqtt_redfish_then_a_verified_report(tmp_path: Path) -> None:
    assert (FIXTURES / "snmp").is_dir(), "the demo's devices serve the shared fixtures"
    state = tmp_path / "demo"
    result = subprocess.run(
        # 90 s: at least one minute boundary with polls well after it, so an interval is
        # settled and the aggregator has stored today's KPI (a 60 s run that starts in the
        # first seconds of a minute may end before any interval is final).
        [sys.executable, "-m", "agent", "demo", "--minutes", "1.5", "--pdus", "4",
         "--state-dir", str(state)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr[-3000:]
    # Live numbers arrived over each protocol within the minute.
    for protocol in ("snmp", "mqtt", "redfish"):
        match = re.search(rf"readings via {protocol}\s*│\s*([\d,]+) from (\d+) devices", out)
        assert match, f"no readings via {protocol}:\n{out[-2000:]}"
        assert int(match.group(1).replace(",", "")) > 0
    # 4 PDUs + 4 UPSes over SNMP, 10 Shelly meters over MQTT, 1 BMC over Redfish.
    assert re.search(r"readings via snmp\s*│\s*[\d,]+ from 8 devices", out)
    assert re.search(r"readings via mqtt\s*│\s*[\d,]+ from 10 devices", out)
    assert "journal verified OK" in out
    # Today's PUE and the month's REF come from the store: a one-minute day is honestly
    # "insufficient data", never a number built on 0 % coverage.
    assert "stored by the aggregator at stop" in out
    final = out.split("stored by the aggregator at stop")[-1]
    assert re.search(r"PUE today \(local day, energy\)\s*│\s*insufficient data", final)
    assert "REF / green share (month)" in out
    assert re.search(r"rule findings \d{4}-\d{2}\s*│\s*\d+ ", out)
    realtime = float(out.split("PUE (realtime, power ratio)")[-1].split("│")[1].strip())
    assert 1.2 <= realtime <= 1.4

    # The busiest PDU's 31-bit register wrapped during the minute: the journal shows the
    # raw decrease as the device sent it (2^31 - 1 counts of 0.1 kWh back to ~0).
    wrapped = re.search(r"(pdu-\d+)'s 31-bit energy register wraps", out)
    assert wrapped
    journal = Journal(state / "journal" / "journal.sqlite")
    readings = pl.concat([b.frame for b in journal.iter_batches(kinds=("readings",))])
    register = (
        readings.filter(
            (pl.col("device") == wrapped.group(1)) & (pl.col("point") == "pdu.1.energy")
        )
        .sort("ts")["value"]
    )
    assert register.max() >= (2**31 - 1) * 0.1 - 1e-6
    assert register.min() < 1.0, "the register did not wrap during the demo"
    assert {b.source for b in journal.iter_batches(kinds=("readings",))} >= {
        "snmp", "mqtt", "redfish"
    }

    # The sample report was signed, verified by the demo, and verifies again independently.
    bundle = next((state / "sample-month" / "reports").glob("demo-*.zip"))
    pubkey = next((state / "sample-month" / "reports").glob("*.pub.pem"))
    verify = subprocess.run(
        [sys.executable, "-m", "agent", "verify", str(bundle), "--pubkey", str(pubkey)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # The simulated month is fully covered: its PUE is a number, with its category, in the
    # band the simulator is built for (1.06 delivery + 0.16-0.26 cooling + 0.015 lighting).
    month_pue = IntervalStore(state / "sample-month" / "store").read_kpis(
        period_kind="month", metric="pue"
    )
    assert month_pue.height == 1
    row = month_pue.row(0, named=True)
    assert row["status"] == "ok"
    assert row["category"] == 2
    assert 1.2 <= row["value"] <= 1.4
