"""``pue-agent kpi --fleet``: every site's PUE, REF and coverage from the fleet's NATS bucket.

``kpi --fleet --retire`` takes a decommissioned site's summary out of the bucket.

Loaded by :mod:`agent.cli.kpi` only when ``--fleet`` is given (nats-py stays out of
``pue-agent kpi --period``). The rows are :func:`agent.fleet.fleet_list`'s, the same
function ``GET /api/v1/fleet`` answers with.
"""

from __future__ import annotations

import asyncio
import json

from agent.cli.common import fail, out, site_or_exit
from agent.fleet import fleet_list, fleet_options, link_failure_code, retire_site
from agent.probe import EXIT_AUTH, EXIT_PROTOCOL, EXIT_UNREACHABLE
from agent.settings import AgentSettings, ConfigError
from collectors.nats.link import LinkError

__all__ = ["retire_fleet_site", "show_fleet"]

_LINK_EXIT = {"unreachable": EXIT_UNREACHABLE, "refused": EXIT_AUTH, "protocol": EXIT_PROTOCOL}


def _number(value: object, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else "—"


def show_fleet(
    settings: AgentSettings,
    as_json: bool,
    servers: list[str] | None,
    stale_after_s: float | None,
    trust: list[str],
) -> None:
    """Print one row per site (a JSON list with ``as_json``); errors exit per the CLI contract.

    Args:
        settings: The reader's settings (NATS connection, ``trusted_keys``).
        as_json: Print the rows as a JSON list.
        servers: ``--nats-url`` override.
        stale_after_s: ``--stale-after`` override.
        trust: ``--trust SITE=KEY`` items.

    Raises:
        typer.Exit: 2 for configuration errors, 3 when NATS is unreachable, 4 when it
            refused the credentials, 6 when JetStream refused the read.
    """
    pinned: dict[str, str] = {}
    for item in trust:
        site_id, sep, key = item.partition("=")
        if not sep or not site_id or not key:
            raise fail(f"--trust expects SITE=KEY, got {item!r}")
        pinned[site_id] = key
    try:
        rows = asyncio.run(
            fleet_list(settings, servers=servers, stale_after_s=stale_after_s, trust=pinned)
        )
    except ConfigError as exc:
        raise fail(str(exc)) from exc
    except LinkError as exc:
        raise fail(f"fleet: {exc}", _LINK_EXIT[link_failure_code(exc)]) from exc
    if as_json:
        out.print_json(json.dumps(rows))
        return
    out.print(f"fleet: {len(rows)} site(s)", highlight=False)
    out.print(
        f"  {'site':16} {'month':7} {'PUE (cat)':>14} {'coverage':>8} {'TTM PUE':>8} "
        f"{'REF':>7} {'CUE':>7} {'age':>9} {'':5}  signature",
        highlight=False,
        soft_wrap=True,
    )
    for row in rows:
        pue = (
            "insufficient"
            if row["pue_month"] is None
            else f"{row['pue_month']:.4f} ({row['category'] or '?'})"
        )
        coverage = row["coverage_month"]
        age = "—" if row["age_s"] is None else f"{row['age_s']:.0f} s"
        signature = row["signature"] + (
            f" ({row['signature_detail']})" if row["signature_detail"] else ""
        )
        out.print(
            f"  {row['site']:16} {row['month'] or '—':7} {pue:>14} "
            f"{'—' if coverage is None else f'{coverage:.1%}':>8} {_number(row['pue_ttm']):>8} "
            f"{_number(row['ref_month'], 3):>7} {_number(row['cue_month'], 3):>7} "
            f"{age:>9} {'STALE' if row['stale'] else '':5}  {signature}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


def retire_fleet_site(settings: AgentSettings, servers: list[str] | None) -> None:
    """Purge this site's summary from the fleet bucket and say what happens next.

    Args:
        settings: The site's own settings (its site model names the key; its NATS user
            may write that key only).
        servers: ``--nats-url`` override.

    Raises:
        typer.Exit: 2 for configuration errors (no site model, no NATS), 3 when NATS is
            unreachable, 4 when it refused the credentials, 6 when JetStream refused the
            purge or the bucket does not exist.
    """
    site = site_or_exit(settings, needed_for="--retire removes this site's own summary")
    try:
        bucket = asyncio.run(retire_site(settings, site.id, servers=servers))
        heartbeat_s = fleet_options(settings, servers=servers).heartbeat_s
    except ConfigError as exc:
        raise fail(str(exc)) from exc
    except LinkError as exc:
        raise fail(f"fleet: {exc}", _LINK_EXIT[link_failure_code(exc)]) from exc
    out.print(
        f"fleet: site {site.id}'s summary purged from bucket {bucket}; `kpi --fleet` no "
        "longer lists it.\n"
        f"  If this site's agent still runs, its next summary (within {heartbeat_s:g} s) "
        "lists it again: stop the agent (or remove its fleet sink) first.",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
