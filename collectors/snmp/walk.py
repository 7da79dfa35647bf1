"""Whole-device walks: taken over a session, written and read as snmprec (``OID|TYPE|VALUE``).

``probe snmp --dump`` writes what a device answers so a user can send it in (and a
test can serve it with snmpsim); ``probe snmp --suggest`` drafts a profile from such a
walk, live or from a file. snmprec is the format the project's test recordings use.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from collectors.snmp import ber
from collectors.snmp.ber import decode_oid, encode_oid, oid_str, parse_oid
from collectors.snmp.client import Session, SnmpProtocolError

__all__ = ["DEFAULT_ROOTS", "WalkRow", "parse_snmprec", "to_snmprec", "walk_device"]

#: What a dump walks: the system group, the UPS-MIB, ENTITY-SENSOR-MIB and every vendor tree.
DEFAULT_ROOTS = ("1.3.6.1.2.1.1", "1.3.6.1.2.1.33", "1.3.6.1.2.1.99", "1.3.6.1.4.1")
#: A walk stops after this many varbinds (a whole switch's tables are not what we are after).
DEFAULT_LIMIT = 20_000

_PRINTABLE = set(string.printable) - set("\x0b\x0c\r")


@dataclass(frozen=True)
class WalkRow:
    """One varbind of a walk: OID, and value as the lean codec decodes it."""

    oid: tuple[int, ...]
    value: int | bytes | tuple[int, ...]


async def walk_device(
    session: Session,
    roots: tuple[str, ...] = DEFAULT_ROOTS,
    *,
    limit: int = DEFAULT_LIMIT,
    max_repetitions: int = 25,
) -> list[WalkRow]:
    """Walk each root subtree with GETBULK, at most ``limit`` varbinds in all.

    Raises:
        collectors.snmp.client.SnmpError: when the device does not answer.
    """
    rows: list[WalkRow] = []
    for root_text in roots:
        root = encode_oid(parse_oid(root_text))
        current = root
        last: tuple[int, ...] | None = None
        while len(rows) < limit:
            varbinds = await session.get_bulk([current], max_repetitions)
            if not varbinds:
                raise SnmpProtocolError(f"{session.label}: empty walk answer")
            done = False
            for oid, value in varbinds:
                if not oid.startswith(root) or value is ber.END_OF_MIB_VIEW:
                    done = True
                    break
                full = decode_oid(oid)
                if last is not None and full <= last:
                    # A looping agent: stop this subtree rather than walk forever.
                    done = True
                    break
                last = full
                if value is None or isinstance(value, ber.Exception_):
                    continue
                rows.append(WalkRow(full, value))
            if done:
                break
            current = varbinds[-1][0]
    return rows[:limit]


def _snmprec_value(value: int | bytes | tuple[int, ...]) -> tuple[int | str, str]:
    if isinstance(value, tuple):
        return 6, oid_str(value)
    if isinstance(value, bytes):
        text = value.decode("utf-8", "replace")
        if value and all(c in _PRINTABLE for c in text) and "|" not in text and "\n" not in text:
            return 4, text
        return "4x", value.hex().upper()
    # The lean codec keeps the number, not its application type: choose the snmprec type
    # that holds it (INTEGER, then Gauge32, then Counter64).
    if -(2**31) <= value < 2**31:
        return 2, str(value)
    if 0 <= value < 2**32:
        return 66, str(value)
    return 70, str(value)


def to_snmprec(rows: list[WalkRow]) -> str:
    """The walk as snmprec text, one ``OID|TYPE|VALUE`` line per varbind, in OID order."""
    lines = []
    for row in sorted(rows, key=lambda r: r.oid):
        kind, text = _snmprec_value(row.value)
        lines.append(f"{oid_str(row.oid)}|{kind}|{text}")
    return "\n".join(lines) + ("\n" if lines else "")


def parse_snmprec(text: str) -> list[WalkRow]:
    """Rows of an snmprec file; comment, blank and malformed lines are skipped.

    Numbers (types 2, 65, 66, 67, 70) become ints, ``4x`` hex and ``4`` text become bytes,
    type 6 an OID; other types (IpAddress, Opaque, NULL) are kept as raw text bytes.
    """
    rows = []
    for line in text.splitlines():
        if not line or line.startswith("#") or line.count("|") < 2:
            continue
        oid_text, kind, value = line.split("|", 2)
        try:
            oid = parse_oid(oid_text.strip().lstrip("."))
        except ValueError:
            continue
        parsed: int | bytes | tuple[int, ...]
        try:
            if kind in ("2", "65", "66", "67", "70"):
                parsed = int(value)
            elif kind == "4x":
                parsed = bytes.fromhex(value)
            elif kind == "6":
                parsed = parse_oid(value.strip().lstrip("."))
            else:
                parsed = value.encode("utf-8", "replace")
        except ValueError:
            continue
        rows.append(WalkRow(oid, parsed))
    return rows
