"""The campus's NATS users and permissions (``deploy/campus/nats``) on a real server.

``users.conf`` is loaded as shipped, with its bcrypt placeholders replaced by plain test
passwords (nats-server accepts both): the agents and the aggregator work with exactly
the permissions the deployment grants, an agent cannot publish as another agent, and a
wrong password is reported without the password in any log line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.js.api import KeyValueConfig

from agent.fleet import fleet_list, link_failure_code, retire_site
from agent.settings import AgentSettings
from collectors.nats.link import LinkError
from tests.cluster.helpers import (
    aggregator_agent,
    collector_of,
    publisher_agent,
    sim_readings,
    sink_of,
    wait_for,
)
from tests.paths import ROOT
from tests.servers.nats import start_nats

TICKS = 30
DEPLOY = ROOT / "deploy" / "campus" / "nats"


def _password(user: str) -> str:
    return f"pw-{user}-s3cret"


def _users_conf() -> str:
    """``users.conf`` as shipped, its bcrypt placeholders replaced by plain test passwords."""
    return re.sub(
        r'"\$2a\$11\$REPLACE_WITH_BCRYPT_HASH_OF_([a-z0-9-]+)"',
        lambda m: f'"{_password(m.group(1))}"',
        (DEPLOY / "users.conf").read_text(encoding="utf-8"),
    )


async def test_deployment_permissions_and_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users = _users_conf()
    server = start_nats(
        tmp_path / "nats",
        extra='include "users.conf"\n',
        files={"users.conf": users},
    )
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for user in ("aggregator", "b1-pdus", "b1-meters-a"):
        (secrets / f"nats-{user}").write_text(_password(user) + "\n", encoding="utf-8")
    (secrets / "nats-wrong").write_text("not-the-password\n", encoding="utf-8")
    link = {
        "servers": server.urls,
        "request_timeout_s": 1.0,
        "reconnect_initial_s": 0.2,
        "reconnect_max_s": 0.5,
    }
    site = aggregator_agent(
        tmp_path / "agg",
        {**link, "user": "aggregator", "password_secret": "nats-aggregator"},
        "agg-1",
        secrets_dir=secrets,
        lease_ttl_s=2.0,
        fetch_wait_s=0.2,
    )
    agents = {"create_stream": False}
    good = publisher_agent(
        tmp_path / "good",
        {**link, **agents, "user": "b1-pdus", "password_secret": "nats-b1-pdus"},
        "b1-pdus",
        TICKS,
        speed=600.0,
        secrets_dir=secrets,
    )
    # b1-meters-a's credentials, but publishing as b1-pdus: the server refuses the subject.
    impostor = publisher_agent(
        tmp_path / "impostor",
        {**link, **agents, "user": "b1-meters-a", "password_secret": "nats-b1-meters-a"},
        "b1-pdus",
        TICKS,
        speed=600.0,
        secrets_dir=secrets,
    )
    wrong = publisher_agent(
        tmp_path / "wrong",
        {**link, **agents, "user": "b1-meters-a", "password_secret": "nats-wrong"},
        "b1-meters-a",
        TICKS,
        speed=600.0,
        secrets_dir=secrets,
    )
    try:
        merged = collector_of(site)
        total = sim_readings(TICKS).height
        await wait_for(lambda: merged.emitted_readings == total, "b1-pdus merged", 30)
        await wait_for(lambda: sink_of(impostor).alarm is not None, "impostor refused")
        await wait_for(lambda: sink_of(wrong).alarm is not None, "wrong password refused")
        for running in (good, impostor, wrong, site):
            await running.stop()
    finally:
        for running in (good, impostor, wrong, site):
            running.kill()
        server.stop()
    assert sink_of(impostor).published == 0 and sink_of(wrong).published == 0
    assert merged.state.heads["b1-pdus"][0] == sink_of(good).published
    assert "refused the credentials" in (sink_of(wrong).alarm or "")
    output = capsys.readouterr()
    for user in ("aggregator", "b1-pdus", "b1-meters-a"):
        assert _password(user) not in output.out + output.err
    assert "not-the-password" not in output.out + output.err


def _fleet_settings(state_dir: Path, secrets: Path, urls: list[str], user: str) -> AgentSettings:
    """A config whose ``fleet`` table logs in as ``user`` of users.conf (password as a secret)."""
    (secrets / f"nats-{user}").write_text(_password(user) + "\n")
    return AgentSettings(
        state_dir=state_dir,
        secrets_dir=secrets,
        sinks=[
            {
                "kind": "fleet",
                "name": "fleet",
                "servers": urls,
                "user": user,
                "password_secret": f"nats-{user}",
                "request_timeout_s": 2.0,
            }
        ],
    )


async def test_fleet_permissions_one_key_per_site_and_a_read_only_head_office(
    tmp_path: Path,
) -> None:
    # users.conf as shipped: the campus's aggregator may write pue_fleet/campus-nw (the
    # site id of deploy/campus/agents/site.toml) and nothing else in the bucket; the head
    # office's fleet-reader lists every site through `fleet_list` (what `kpi --fleet` and
    # the API call) and cannot write.
    users = _users_conf()
    server = start_nats(
        tmp_path / "nats", extra='include "users.conf"\n', files={"users.conf": users}
    )
    summary = {"summary": {"site": "campus-nw", "month": "2026-11"}, "signature": None}
    try:
        writer = await nats.connect(
            servers=server.urls, user="aggregator", password=_password("aggregator")
        )
        try:
            js = writer.jetstream(timeout=2.0)
            # What the fleet sink does on first start: open the bucket, else create it.
            kv = await js.create_key_value(KeyValueConfig(bucket="pue_fleet", history=1))
            await kv.put("campus-nw", json.dumps(summary).encode())
            with pytest.raises((nats.errors.Error, nats.js.errors.Error)):
                await kv.put("other-site", b"{}")  # another site's key: not granted
        finally:
            await writer.close()
        secrets = tmp_path / "secrets"
        secrets.mkdir()
        reader = _fleet_settings(tmp_path / "hq", secrets, server.urls, "fleet-reader")
        rows = await fleet_list(reader)
        assert [(r["site"], r["signature"]) for r in rows] == [("campus-nw", "unsigned")]
        # `kpi --fleet --retire` with the campus's own credentials: its own key may be
        # purged, another site's may not (a purge is a write).
        campus = _fleet_settings(tmp_path / "campus", secrets, server.urls, "aggregator")
        with pytest.raises(LinkError) as refused:
            await retire_site(campus, "other-site")
        assert str(refused.value) == (
            "NATS refused the purge of pue_fleet/other-site: this user may not write that "
            "key (permissions violation)"
        )
        assert link_failure_code(refused.value) == "refused"  # `kpi --fleet --retire` exits 4
        assert await fleet_list(reader) != []
        assert await retire_site(campus, "campus-nw") == "pue_fleet"
        assert await fleet_list(reader) == []
        intruder = await nats.connect(
            servers=server.urls, user="fleet-reader", password=_password("fleet-reader")
        )
        try:
            kv = await intruder.jetstream(timeout=2.0).key_value("pue_fleet")
            with pytest.raises((nats.errors.Error, nats.js.errors.Error)):
                await kv.put("campus-nw", b"{}")
        finally:
            await intruder.close()
    finally:
        server.stop()


async def test_a_batch_over_the_servers_max_payload_is_held_with_an_alarm(
    tmp_path: Path,
) -> None:
    # A journal batch is one message, never split: a server that cannot take it gets an
    # alarm naming the setting, and the batch stays in the journal (cursor not moved).
    server = start_nats(tmp_path / "nats", extra="max_payload: 1024\n")
    link = {"servers": server.urls, "reconnect_initial_s": 0.2, "reconnect_max_s": 0.5}
    pub = publisher_agent(tmp_path / "pub", link, "poller-a", TICKS, speed=600.0)
    try:
        await wait_for(lambda: sink_of(pub).alarm is not None, "the size alarm")
        await pub.stop()
    finally:
        pub.kill()
        server.stop()
    assert "over the server's max_payload of 1024" in (sink_of(pub).alarm or "")
    assert sink_of(pub).published == 0
    assert pub.agent.journal.cursor("campus") == 0
