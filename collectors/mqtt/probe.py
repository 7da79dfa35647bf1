"""``pue-agent probe mqtt BROKER TOPIC --mapping FILE``: print the readings a mapping yields.

With ``--suggest`` instead of ``--mapping`` it prints a mapping TOML suggested from the
messages received (:mod:`collectors.mqtt.suggest`).

Exit codes (README.md, "Exit codes"): 0 listened (readings printed, possibly none; or a
mapping suggested); 1 ``--suggest`` received nothing it could map; 2 bad arguments or
mapping; 3 broker unreachable (refused, timed out); 4 the broker refused the credentials;
6 other MQTT error; 7 host name cannot be resolved. With ``--json`` an error is
``{"error": …, "code": …}`` on stdout.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Annotated
from urllib.parse import urlsplit

import aiomqtt
import typer
from paho.mqtt.reasoncodes import ReasonCode

from agent.probe import (
    EXIT_AUTH,
    EXIT_FAILED,
    EXIT_PROTOCOL,
    EXIT_UNREACHABLE,
    EXIT_UNRESOLVED,
    EXIT_USAGE,
    error_exit,
    print_readings,
    resolve_host,
)
from agent.settings import ConfigError, read_secret
from collectors.mqtt.connection import BatchingClient, ConnectionSpec, Inbox, tls_context
from collectors.mqtt.decode import Decoder, DecodeResult
from collectors.mqtt.mapping import TopicRouter, load_mapping
from collectors.mqtt.suggest import suggest_mapping

__all__ = ["exit_code_for", "listen", "parse_broker", "probe", "register"]

#: CONNACK return codes (3.1.1) and reason codes (5) that mean "credentials refused".
_AUTH_CODES = frozenset({4, 5, 134, 135})


def exit_code_for(exc: BaseException) -> int:
    """The probe's exit code for a failure to read from the broker."""
    if isinstance(exc, aiomqtt.MqttCodeError):
        rc = exc.rc.value if isinstance(exc.rc, ReasonCode) else exc.rc
        return EXIT_AUTH if rc in _AUTH_CODES else EXIT_PROTOCOL
    if isinstance(exc, aiomqtt.MqttError | OSError | TimeoutError):
        # aiomqtt turns connect-time OSErrors (refused, unreachable) and timeouts into MqttError.
        return EXIT_UNREACHABLE
    return EXIT_PROTOCOL


def parse_broker(broker: str) -> tuple[str, int, bool]:
    """``host``, ``host:port``, ``mqtt://host:port`` or ``mqtts://host:port`` -> (host, port, tls).

    Raises:
        ValueError: for another scheme or a bad port.
    """
    url = urlsplit(broker if "://" in broker else f"mqtt://{broker}")
    if url.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError(f"broker {broker!r}: scheme must be mqtt:// or mqtts://")
    tls = url.scheme in ("mqtts", "ssl")
    if not url.hostname:
        raise ValueError(f"broker {broker!r}: no host")
    return url.hostname, url.port or (8883 if tls else 1883), tls


async def listen(
    spec: ConnectionSpec, topic: str, qos: int, seconds: float, messages: int | None = None
) -> list[tuple[str, bytes, float]]:
    """(topic, payload, receive time) of what arrives on ``topic`` within ``seconds``.

    Stops early once ``messages`` have arrived (``None``: listen the whole time).
    """
    inbox = Inbox()
    async with BatchingClient(spec, inbox) as client:
        await client.subscribe(topic, qos)
        if messages is None:
            await asyncio.sleep(seconds)
        else:
            await inbox.wait(messages, seconds)
    items = inbox.items if messages is None else inbox.items[:messages]
    return [(t, bytes(p), r) for t, p, r, _, _, _ in items]


async def probe(
    spec: ConnectionSpec, topic: str, qos: int, decoder: Decoder, seconds: float
) -> DecodeResult:
    """Subscribe to ``topic`` for ``seconds`` and decode everything received (no journal)."""
    return decoder.decode(await listen(spec, topic, qos, seconds))


def register(probe_app: typer.Typer) -> None:
    """Add ``probe mqtt``."""

    @probe_app.command("mqtt")
    def mqtt_command(
        broker: Annotated[str, typer.Argument(help="host[:port], mqtt://… or mqtts://…")],
        topic: Annotated[str, typer.Argument(help="Topic filter to subscribe to (wildcards ok).")],
        mapping: Annotated[
            str | None, typer.Option(help="Mapping TOML file or built-in name.")
        ] = None,
        suggest: Annotated[
            bool, typer.Option("--suggest", help="Print a mapping suggested from the messages.")
        ] = False,
        messages: Annotated[
            int, typer.Option(min=1, help="--suggest: stop after this many messages.")
        ] = 20,
        device_level: Annotated[
            int | None,
            typer.Option(min=1, help="--suggest: the topic level (1-based) naming the device."),
        ] = None,
        seconds: Annotated[float, typer.Option(help="How long to listen.")] = 5.0,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
        qos: Annotated[int, typer.Option(min=0, max=2)] = 0,
        ca_file: Annotated[str | None, typer.Option(help="CA bundle for mqtts://.")] = None,
        username: Annotated[str | None, typer.Option()] = None,
        password_secret: Annotated[
            str | None, typer.Option(help="Secret name holding the password.")
        ] = None,
        protocol: Annotated[str, typer.Option(help="5 or 3.1.1")] = "5",
        max_skew_s: Annotated[float, typer.Option()] = 300.0,
    ) -> None:
        """Listen on TOPIC and print the readings MAPPING yields (retained messages included).

        With --suggest, print a mapping TOML that decodes what arrived instead.
        """
        if (mapping is None) == (not suggest):
            raise error_exit("give either --mapping FILE or --suggest", EXIT_USAGE)
        try:
            host, port, tls = parse_broker(broker)
            rules = load_mapping(mapping).rules if mapping is not None else []
            password = read_secret(password_secret).get_secret_value() if password_secret else None
            context = tls_context(ca_file) if tls or ca_file else None
        except (ConfigError, ValueError, OSError) as exc:
            raise error_exit(str(exc), EXIT_USAGE) from None
        unresolved = resolve_host(host)
        if unresolved is not None:
            raise error_exit(unresolved, EXIT_UNRESOLVED)
        spec = ConnectionSpec(
            host=host,
            port=port,
            identifier=f"pue-agent-probe-{os.getpid()}-{int(time.time())}",
            protocol="5" if protocol == "5" else "3.1.1",
            persistent=False,
            manual_ack=False,
            username=username,
            password=password,
            tls=context,
        )
        decoder = Decoder(TopicRouter(rules), max_skew_s=max_skew_s)
        try:
            if suggest:
                received = asyncio.run(listen(spec, topic, qos, seconds, messages))
            else:
                result = asyncio.run(probe(spec, topic, qos, decoder, seconds))
        except Exception as exc:  # noqa: BLE001 - a probe reports any failure with its code
            message = f"cannot read from {host}:{port}: {exc or type(exc).__name__}"
            raise error_exit(message, exit_code_for(exc)) from None
        if suggest:
            _print_suggestion(received, device_level, as_json=as_json)
            return
        print_readings(result.frame, as_json=as_json, extra={"mapping": mapping})
        summary = f"messages: {result.accepted} mapped, {result.ignored} ignored"
        for reason, count in sorted(result.rejected.items()):
            summary += f", {count} rejected ({reason})"
        print(summary, file=sys.stderr)


def _print_suggestion(
    received: list[tuple[str, bytes, float]], level: int | None, *, as_json: bool
) -> None:
    """Print the suggested mapping (with ``--json``: one object); exit 1 if nothing is active."""
    if not received:
        raise error_exit("no message arrived: nothing to suggest from", EXIT_FAILED)
    suggestion = suggest_mapping([(t, p) for t, p, _ in received], level=level)
    if as_json:
        record = {
            "mapping": suggestion.toml,
            "rules": suggestion.rules,
            "messages": suggestion.messages,
            "topics": suggestion.topics,
            "not_mapped": suggestion.skipped,
        }
        if not suggestion.rules:  # a failure with --json carries "error" and "code" too
            record.update(error="nothing received could be mapped", code=EXIT_FAILED)
        print(json.dumps(record, ensure_ascii=False))
    else:
        print(suggestion.toml, end="")
    summary = (
        f"suggested {suggestion.rules} rule(s) from {suggestion.messages} message(s) on "
        f"{suggestion.topics} topic(s)"
    )
    for topic, why in suggestion.skipped.items():
        summary += f"; not mapped: {topic} ({why})"
    print(summary, file=sys.stderr)
    if not suggestion.rules:
        raise typer.Exit(EXIT_FAILED)
