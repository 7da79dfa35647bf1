"""Numeric range patterns such as ``pdu-[001-200]``: one config entry for many devices.

A hall of identical PDUs is one site meter and one collector entry, not hundreds: the
entry's key (a meter's ``id``, a device's ``name``) holds one or more ranges ``[a-b]`` and
expands to every combination, first range outermost. ``[001-200]`` keeps the width of its
start (``001`` … ``200``); ``[1-200]`` does not pad. The entry's other text fields take
part in the expansion in one of two ways:

- a range written exactly as in the key takes the key's value at that position
  (``id = "ups-[01-20].l[1-3]"``, ``device = "ups-[01-20]"``, ``power_point =
  "output.[1-3].power"``: 60 meters on 20 devices);
- when the key has a single range, any single range of the same length advances with it
  (``name = "pdu-[001-200]"``, ``host = "10.20.1.[11-210]"``).

Anything else (an unclosed bracket, a descending range, ranges of different lengths) is a
:class:`PatternError` naming the field and the text.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_EXPANSION", "PatternError", "expand", "expand_entry", "has_pattern"]

#: More entries than this from one pattern is a typo (``[1-100000]``), not a hall.
MAX_EXPANSION = 100_000

_RANGE = re.compile(r"\[([^\[\]]*)\]")
#: In fields other than the key only ``[digits-digits]`` is a range, so that brackets with
#: another meaning (an IPv6 literal in a URL, ``https://[fd00::17]``) stay as written.
_NUMERIC_RANGE = re.compile(r"\[(\s*\d+\s*-\s*\d+\s*)\]")
_BOUNDS = re.compile(r"^(\d+)-(\d+)$")


class PatternError(ValueError):
    """A range pattern that cannot be expanded; the message names field and text."""


@dataclass(frozen=True)
class _Range:
    text: str  # as written, brackets included: how fields refer to it
    values: tuple[str, ...]


def has_pattern(text: str) -> bool:
    """Whether ``text`` holds a bracket, i.e. is meant as a pattern (valid or not)."""
    return "[" in text or "]" in text


def _parse(text: str, field: str, *, strict: bool = True) -> tuple[list[str], list[_Range]]:
    """Split ``text`` into literal pieces and ranges (``len(pieces) == len(ranges) + 1``).

    ``strict`` (the key): every bracket must be a well-formed range.
    """
    pieces: list[str] = []
    ranges: list[_Range] = []
    position = 0
    for match in (_RANGE if strict else _NUMERIC_RANGE).finditer(text):
        pieces.append(text[position : match.start()])
        bounds = _BOUNDS.match(match.group(1).replace(" ", ""))
        if bounds is None:
            raise PatternError(
                f"{field}: {text!r}: {match.group(0)!r} is not a range like [001-200]"
            )
        first, last = bounds.groups()
        if int(first) > int(last):
            raise PatternError(f"{field}: {text!r}: range {match.group(0)} runs backwards")
        width = len(first) if first.startswith("0") and len(first) > 1 else 0
        values = tuple(str(n).zfill(width) for n in range(int(first), int(last) + 1))
        ranges.append(_Range(match.group(0), values))
        position = match.end()
    pieces.append(text[position:])
    if strict and any("[" in piece or "]" in piece for piece in pieces):
        raise PatternError(f"{field}: {text!r}: unbalanced '[' or ']'")
    return pieces, ranges


def expand(text: str, field: str = "pattern") -> list[str]:
    """Every string ``text`` stands for (itself when it has no range).

    Raises:
        PatternError: for a malformed pattern or one expanding past :data:`MAX_EXPANSION`.
    """
    return [entry[field] for entry in expand_entry({field: text}, field)]


def expand_entry(entry: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """Expand one config entry over the ranges of its ``key`` field (see module doc).

    Non-string values are copied unchanged. An entry without ranges comes back as is.

    Raises:
        PatternError: naming the field, for a malformed pattern, a range in another field
            that the key does not have, or more than :data:`MAX_EXPANSION` entries.
    """
    key_text = entry.get(key)
    if not isinstance(key_text, str) or not has_pattern(key_text):
        for name, value in entry.items():
            if isinstance(value, str) and _NUMERIC_RANGE.search(value):
                raise PatternError(f"{name}: {value!r} has a range but {key} {key_text!r} has none")
        return [dict(entry)]
    key_pieces, key_ranges = _parse(key_text, key)
    texts = [r.text for r in key_ranges]
    repeated = sorted({t for t in texts if texts.count(t) > 1})
    if repeated:
        raise PatternError(f"{key}: {key_text!r}: write each range once (repeats {repeated})")
    total = 1
    for r in key_ranges:
        total *= len(r.values)
    if total > MAX_EXPANSION:
        raise PatternError(
            f"{key}: {key_text!r} expands to {total:,} entries (at most {MAX_EXPANSION:,})"
        )
    # For every other patterned field: its pieces, and per range the key range it follows.
    followers: dict[str, tuple[list[str], list[int], list[tuple[str, ...]]]] = {}
    for name, value in entry.items():
        if name == key or not isinstance(value, str) or not _NUMERIC_RANGE.search(value):
            continue
        pieces, ranges = _parse(value, name, strict=False)
        links = []
        for r in ranges:
            if r.text in texts:
                links.append(texts.index(r.text))
            elif len(key_ranges) == 1 and len(r.values) == len(key_ranges[0].values):
                links.append(0)
            else:
                raise PatternError(
                    f"{name}: {value!r}: range {r.text} is not in {key} {key_text!r}"
                    + (
                        f" and has {len(r.values)} values where {key} has "
                        f"{len(key_ranges[0].values)}"
                        if len(key_ranges) == 1
                        else ""
                    )
                )
        # A field's own values: a range in step with the key's may differ in text.
        followers[name] = (pieces, links, [r.values for r in ranges])
    out: list[dict[str, Any]] = []
    for combo in itertools.product(*(range(len(r.values)) for r in key_ranges)):
        expanded = dict(entry)
        values = [r.values[i] for r, i in zip(key_ranges, combo, strict=True)]
        expanded[key] = _join(key_pieces, values)
        for name, (pieces, links, own) in followers.items():
            expanded[name] = _join(pieces, [own[j][combo[link]] for j, link in enumerate(links)])
        out.append(expanded)
    return out


def _join(pieces: list[str], values: list[str]) -> str:
    parts = [pieces[0]]
    for value, piece in zip(values, pieces[1:], strict=True):
        parts += [value, piece]
    return "".join(parts)
