"""``pue-agent probe snmp HOST[:PORT]``: poll one device once and print its readings.

``--dump FILE`` writes what the device answers as an snmprec walk (to send in, or to
test a profile with); ``--suggest`` prints a profile drafted from a walk of the device
(or of ``--walk FILE``) for a person to confirm (:mod:`collectors.snmp.suggest`).

Exit codes (README.md, "Exit codes"): 0 readings printed; 2 bad arguments; 3 timeout;
4 SNMPv3 authentication/privacy failure; 5 no matching profile, or the forced
``--profile`` yields no readings; 6 other SNMP error; 7 host name cannot be resolved.
With ``--json`` an error is ``{"error": …, "code": …}`` on stdout.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from pydantic import SecretStr

from agent.probe import (
    EXIT_AUTH,
    EXIT_NO_PROFILE,
    EXIT_PROTOCOL,
    EXIT_UNREACHABLE,
    EXIT_UNRESOLVED,
    EXIT_USAGE,
    error_exit,
    print_readings,
    resolve_host,
)
from agent.readings import Quality, ReadingBuffer
from collectors.snmp.client import (
    AUTH_PROTOCOLS,
    PRIV_PROTOCOLS,
    SnmpAuthError,
    SnmpError,
    SnmpTimeoutError,
    UdpDispatcher,
    V3Credentials,
)
from collectors.snmp.collector import NoProfileError, make_session, resolve_plan
from collectors.snmp.poller import Poller
from collectors.snmp.profiles import ProfileError, load_profiles
from collectors.snmp.suggest import suggest_profile
from collectors.snmp.walk import WalkRow, parse_snmprec, to_snmprec, walk_device

__all__ = ["parse_target", "register"]

EXIT_TIMEOUT = EXIT_UNREACHABLE
EXIT_SNMP = EXIT_PROTOCOL


def parse_target(target: str) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` -> (host, port).

    Raises:
        typer.BadParameter: if the port is not a number in 1..65535.
    """
    host, port = target, 161
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        if rest.startswith(":"):
            port_text = rest[1:]
            port = int(port_text) if port_text.isdigit() else -1
    elif target.count(":") == 1:
        host, port_text = target.split(":")
        port = int(port_text) if port_text.isdigit() else -1
    if not host or not 1 <= port <= 65535:
        raise typer.BadParameter(f"expected HOST or HOST:PORT, got {target!r}")
    return host, port


def _secret(value: str | None, env: str | None) -> SecretStr | None:
    if value is not None:
        return SecretStr(value)
    if env:
        found = os.environ.get(env)
        if found is None:
            raise typer.BadParameter(f"environment variable {env} is not set")
        return SecretStr(found)
    return None


async def _probe(
    host: str,
    port: int,
    community: SecretStr | None,
    v3: V3Credentials | None,
    profile: str,
    timeout_s: float,
    retries: int,
    walk: bool = False,
) -> tuple[ReadingBuffer, str, list[WalkRow]]:
    # The lean path for v2c and v3 alike, as the collector polls (pysnmp is its reference).
    dispatcher = UdpDispatcher()
    await dispatcher.open()
    try:
        session = make_session(
            host,
            port,
            community=community,
            v3=v3,
            timeout_s=timeout_s,
            retries=retries,
            dispatcher=dispatcher,
            engine=None,
            label=f"{host}:{port}",
        )
        if walk:
            # --dump / --suggest: what the device answers, whatever profile fits it.
            return ReadingBuffer(), "", await walk_device(session)
        plan = await resolve_plan(session, load_profiles(), profile, None, 40)
        buffer = ReadingBuffer()
        await Poller(f"{host}:{port}" if port != 161 else host, session, plan).poll(buffer)
        return buffer, plan.describe(), []
    finally:
        dispatcher.close()


def register(probe_app: typer.Typer) -> None:
    """Add ``probe snmp`` to the probe group."""

    @probe_app.command("snmp")
    def probe_snmp(
        target: Annotated[
            str | None, typer.Argument(help="HOST or HOST:PORT (default port 161).")
        ] = None,
        community: Annotated[
            str | None, typer.Option("--community", "-c", help="SNMPv2c community.")
        ] = None,
        v3_user: Annotated[str | None, typer.Option("--v3-user", help="SNMPv3 user.")] = None,
        v3_auth_protocol: Annotated[
            str, typer.Option("--v3-auth-protocol", help=f"One of {', '.join(AUTH_PROTOCOLS)}.")
        ] = "SHA256",
        v3_auth_key_env: Annotated[
            str | None,
            typer.Option("--v3-auth-key-env", help="Environment variable holding the auth key."),
        ] = None,
        v3_priv_protocol: Annotated[
            str, typer.Option("--v3-priv-protocol", help=f"One of {', '.join(PRIV_PROTOCOLS)}.")
        ] = "AES",
        v3_priv_key_env: Annotated[
            str | None,
            typer.Option("--v3-priv-key-env", help="Environment variable holding the priv key."),
        ] = None,
        v3_context: Annotated[str, typer.Option("--v3-context", help="Context name.")] = "",
        allow_des: Annotated[
            bool, typer.Option("--allow-des", help="Permit DES privacy / MD5 auth.")
        ] = False,
        profile: Annotated[
            str, typer.Option("--profile", help="Profile name, or 'auto' to detect.")
        ] = "auto",
        timeout_s: Annotated[float, typer.Option("--timeout", help="Seconds per try.")] = 2.0,
        retries: Annotated[int, typer.Option("--retries", help="Retries after a timeout.")] = 1,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
        dump: Annotated[
            Path | None,
            typer.Option("--dump", help="Write the device's walk to this snmprec file."),
        ] = None,
        suggest: Annotated[
            bool, typer.Option("--suggest", help="Print a profile drafted from a walk.")
        ] = False,
        walk_file: Annotated[
            Path | None,
            typer.Option("--walk", help="--suggest from this snmprec walk instead of a device."),
        ] = None,
    ) -> None:
        """Poll one SNMP device once and print what its profile yields.

        Keys are read from environment variables (--v3-auth-key-env/--v3-priv-key-env)
        so they never appear in the process list or shell history. --dump writes the
        device's walk (system group, UPS-MIB, ENTITY-SENSOR-MIB, vendor trees) as snmprec;
        --suggest prints a profile drafted from it (or from --walk FILE, no device needed).
        """
        if walk_file is not None:
            if not suggest:
                raise error_exit("--walk FILE goes with --suggest", EXIT_USAGE)
            try:
                rows = parse_snmprec(walk_file.read_text(encoding="utf-8", errors="replace"))
            except OSError as exc:
                raise error_exit(f"cannot read {walk_file}: {exc.strerror}", EXIT_USAGE) from None
            _print_suggestion(rows, str(walk_file))
            return
        if target is None:
            raise error_exit("give HOST[:PORT] (or --suggest --walk FILE)", EXIT_USAGE)
        host, port = parse_target(target)
        if (community is None) == (v3_user is None):
            raise typer.BadParameter("give exactly one of --community or --v3-user")
        v3 = None
        if v3_user is not None:
            if v3_auth_protocol not in AUTH_PROTOCOLS or v3_priv_protocol not in PRIV_PROTOCOLS:
                raise typer.BadParameter("unknown SNMPv3 auth or privacy protocol")
            if not allow_des and (v3_priv_protocol == "DES" or v3_auth_protocol == "MD5"):
                raise typer.BadParameter("DES/MD5 are insecure; pass --allow-des to use them")
            v3 = V3Credentials(
                user=v3_user,
                auth_protocol=v3_auth_protocol,  # type: ignore[arg-type]
                auth_key=_secret(None, v3_auth_key_env),
                priv_protocol=v3_priv_protocol,  # type: ignore[arg-type]
                priv_key=_secret(None, v3_priv_key_env),
                context=v3_context,
            )
        unresolved = resolve_host(host)
        if unresolved is not None:
            raise error_exit(unresolved, EXIT_UNRESOLVED)
        walk = dump is not None or suggest
        try:
            buffer, profile_used, rows = asyncio.run(
                _probe(host, port, _secret(community, None), v3, profile, timeout_s, retries, walk)
            )
        except SnmpTimeoutError as exc:
            raise error_exit(f"timeout: {exc}", EXIT_TIMEOUT) from None
        except SnmpAuthError as exc:
            raise error_exit(f"authentication: {exc}", EXIT_AUTH) from None
        except (NoProfileError, ProfileError) as exc:
            raise error_exit(f"no profile: {exc}", EXIT_NO_PROFILE) from None
        except SnmpError as exc:
            raise error_exit(str(exc), EXIT_SNMP) from None
        if walk:
            if not rows:
                raise error_exit(f"{target} answered nothing under the walked subtrees", EXIT_SNMP)
            if dump is not None:
                try:
                    dump.write_text(to_snmprec(rows), encoding="utf-8")
                except OSError as exc:
                    raise error_exit(f"cannot write {dump}: {exc.strerror}", EXIT_USAGE) from None
                typer.echo(f"wrote {len(rows)} varbind(s) from {target} to {dump}", err=True)
            if suggest:
                _print_suggestion(rows, target)
            return
        readings = buffer.take()
        if readings.filter(pl.col("point") != "sys.uptime").is_empty():
            # A forced profile is not checked against the device: nothing but the uptime
            # every profile reads means it is the wrong one (an auto-detected profile that
            # reads nothing else is as useless).
            raise error_exit(
                f"no profile: profile {profile_used!r} yields no readings from {target} "
                "(only sys.uptime); try --profile auto or another profile",
                EXIT_NO_PROFILE,
            )
        columns: list[str] = []
        if ((readings["quality"] & int(Quality.DERIVED)) != 0).any():
            # A profile's sum (no total in the MIB) is not a device value: say so.
            derived = (pl.col("quality") & int(Quality.DERIVED)) != 0
            readings = readings.with_columns(
                pl.when(derived)
                .then(pl.lit("DERIVED (sum)"))
                .otherwise(pl.lit(""))
                .alias("derived")
            )
            columns = ["derived"]
        print_readings(
            readings, as_json=as_json, extra={"profile": profile_used}, extra_columns=columns
        )


def _print_suggestion(rows: list[WalkRow], source: str) -> None:
    """Print the drafted profile; say on stderr how much of it is a guess."""
    suggestion = suggest_profile(rows)
    print(suggestion.toml, end="")
    powers = sum(c.quantity == "power_w" for c in suggestion.candidates)
    typer.echo(
        f"drafted {len(suggestion.candidates)} metric(s) ({powers} power) from {len(rows)} "
        f"varbind(s) of {source}: confirm every CONFIRM line against the MIB",
        err=True,
    )
