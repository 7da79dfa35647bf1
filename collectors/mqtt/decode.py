"""Turn a batch of raw MQTT messages into one reading frame, counting what is rejected.

The hot path works on a whole batch: per message it does only what cannot be
vectorised (parse the payload with the C JSON / protobuf parsers, pick the
mapped values, type-check them), appending to plain column lists; scaling,
timestamp skew checks and quality flags are then applied to the columns at
once by Polars. Why not Polars' JSON functions: ``str.json_path_match`` loses
the JSON type (``"12.5"`` and ``12.5`` look alike, so wrong types would pass)
and ``str.json_decode`` fails the whole column on one malformed payload.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

import polars as pl

from agent.readings import READING_SCHEMA, Quality
from collectors.mqtt.mapping import Route, TopicRouter
from collectors.mqtt.sparkplug_b import Payload, metric_value

__all__ = ["REJECT_REASONS", "DecodeResult", "Decoder", "RawMessage", "timestamp_seconds"]

#: Why a message is dropped (the ``reason`` label of ``pue_agent_readings_rejected``).
REJECT_REASONS = (
    "oversize",
    "unknown_topic",
    "malformed",
    "wrong_type",
    "non_finite",
    "missing_field",
    "unknown_alias",
    # The payload's timestamp is there but cannot be read in the rule's timestamp_format
    # (a string for epoch, a number or non-ISO string for iso8601, a number beyond range):
    # the message is dropped rather than journalled at a time the device did not say.
    "bad_timestamp",
    # An unforeseen exception while decoding one message: counted, never fatal to the batch.
    "decode_error",
)

#: A received message: (topic, payload, receive time in seconds since the epoch).
RawMessage = tuple[str, bytes | bytearray, float]

_SPARKPLUG_VALUE_TYPES = frozenset({"NBIRTH", "DBIRTH", "NDATA", "DDATA"})
_TS_DIVISOR = {"s": 1.0, "ms": 1e3, "us": 1e6}


class _Reject(Exception):  # noqa: N818 - control flow inside the decoder, never escapes
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _no_constants(name: str) -> float:
    # json.loads accepts NaN/Infinity by default; a meter never means them.
    raise _Reject("non_finite")


_loads = json.JSONDecoder(parse_constant=_no_constants).decode


def _number(value: object, optional: bool) -> float | None:
    """A finite float from a JSON/Sparkplug value, ``None`` for an allowed absence."""
    if type(value) is float:  # the common case first: one type check, no isinstance chain
        if value - value == 0.0:  # false for NaN and +-inf
            return value
        raise _Reject("non_finite")
    if value is None:
        if optional:
            return None
        raise _Reject("missing_field")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Reject("wrong_type")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range, e.g. a 400-digit payload
        raise _Reject("non_finite") from None
    if not math.isfinite(number):
        raise _Reject("non_finite")
    return number


def _scaled_ok(value: float, scale: float) -> None:
    """Reject a value that the mapping's scale would push beyond float range."""
    product = value * scale
    if product - product != 0.0:
        raise _Reject("non_finite")


def timestamp_seconds(raw: object, fmt: str, unit: str, zone: tzinfo) -> float:
    """A payload timestamp in seconds since the epoch.

    Args:
        raw: The JSON value at the rule's ``timestamp_path``.
        fmt: ``epoch`` (a number in ``unit``) or ``iso8601`` (a string).
        unit: ``s``, ``ms`` or ``us`` for epoch numbers.
        zone: Applied to ISO 8601 strings that carry no offset.

    Raises:
        ValueError: if ``raw`` is not a timestamp in that format.
    """
    if fmt == "iso8601":
        if type(raw) is not str:
            raise ValueError("iso8601 timestamp is not a string")
        # Python 3.11 reads ISO 8601 with "Z", offsets, fractions, a space or "T".
        moment = datetime.fromisoformat(raw)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone)
        return moment.timestamp()
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError("epoch timestamp is not a number")
    try:
        return float(raw) / _TS_DIVISOR[unit]
    except OverflowError:  # a 400-digit integer
        raise ValueError("epoch timestamp out of range") from None


#: Sequence numbers beyond this are garbage, not counters (a gap of 10**400 cannot be counted).
_MAX_SEQ = 2**63


def _get(obj: object, path: tuple[str | int, ...] | str) -> object:
    if len(path) == 1 and type(obj) is dict:
        return obj.get(path[0])  # top-level key: the usual case
    for part in path:
        if isinstance(part, int):
            if not isinstance(obj, list) or part >= len(obj):
                return None
        elif not isinstance(obj, dict):
            return None
        obj = obj[part] if isinstance(obj, list) else obj.get(part)  # type: ignore[index]
    return obj


@dataclass
class DecodeResult:
    """What one batch of messages yielded."""

    frame: pl.DataFrame
    accepted: int
    rejected: Counter[str]
    #: Messages that are valid but carry no readings (e.g. Sparkplug DEATH / CMD).
    ignored: int
    #: Messages missing according to per-device sequence numbers.
    lost: int
    #: One example per reason: (topic, reason); never the payload (it may be large or hostile).
    examples: dict[str, str] = field(default_factory=dict)


class Decoder:
    """Decodes batches for one collector; keeps sequence and Sparkplug alias state."""

    def __init__(
        self,
        router: TopicRouter,
        *,
        max_payload_bytes: int = 65_536,
        max_skew_s: float = 300.0,
    ) -> None:
        """Decode with ``router``'s rules.

        Args:
            router: Topic to rule routing.
            max_payload_bytes: Larger payloads are rejected as ``oversize`` unparsed.
            max_skew_s: A payload timestamp further than this from the receive time is
                not trusted: the receive time is used and flagged ``RECEIVE_TIME``.
        """
        self.router = router
        self.max_payload_bytes = max_payload_bytes
        self.max_skew_s = max_skew_s
        self._last_seq: dict[str, int] = {}
        self._aliases: dict[tuple[str, str], dict[int, str]] = {}
        self._sparkplug_seq: dict[tuple[str, str], int] = {}

    def decode(self, messages: Sequence[RawMessage]) -> DecodeResult:
        """Decode ``messages`` (any mix of topics) into one frame."""
        cols: dict[str, list[Any]] = {
            k: [] for k in ("device", "point", "quantity", "value", "scale", "ts", "recv")
        }
        rejected: Counter[str] = Counter()
        examples: dict[str, str] = {}
        accepted = ignored = lost = 0
        resolve = self.router.resolve
        limit = self.max_payload_bytes
        for topic, payload, recv in messages:
            try:
                if len(payload) > limit:
                    raise _Reject("oversize")
                route = resolve(topic)
                if route is None:
                    raise _Reject("unknown_topic")
                fmt = route.rule.format
                if fmt == "json":
                    lost += self._json(route, payload, recv, cols)
                elif fmt == "number":
                    self._plain(route, payload, recv, cols)
                else:
                    has_values, gap = self._sparkplug(route, payload, recv, cols)
                    lost += gap
                    if not has_values:
                        ignored += 1
                        continue
                accepted += 1
            except _Reject as exc:
                rejected[exc.reason] += 1
                examples.setdefault(exc.reason, topic)
            except Exception:  # noqa: BLE001 - one message must never stop the collector
                # Nothing of this message was appended: every format appends last.
                rejected["decode_error"] += 1
                examples.setdefault("decode_error", topic)
        return DecodeResult(
            frame=self._frame(cols),
            accepted=accepted,
            rejected=rejected,
            ignored=ignored,
            lost=lost,
            examples=examples,
        )

    # -- formats ------------------------------------------------------------------------------

    def _json(
        self, route: Route, payload: bytes | bytearray, recv: float, cols: dict[str, list[Any]]
    ) -> int:
        try:
            doc = _loads(payload.decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            raise _Reject("malformed") from exc
        if not isinstance(doc, dict):
            raise _Reject("wrong_type")
        values = []
        for path, point, quantity, scale, optional in route.fields:
            value = _number(_get(doc, path), optional)
            if value is not None:
                _scaled_ok(value, scale)
                values.append((point, quantity, value, scale))
        ts = math.nan
        if route.ts_path is not None:
            raw_ts = _get(doc, route.ts_path)
            if raw_ts is not None:  # absent: the receive time, flagged RECEIVE_TIME
                rule = route.rule
                try:
                    ts = timestamp_seconds(
                        raw_ts, rule.timestamp_format, rule.timestamp_unit, route.ts_zone
                    )
                except (ValueError, OverflowError, OSError):
                    raise _Reject("bad_timestamp") from None
        lost = 0
        if route.seq_path is not None:
            lost = self._sequence(route.device, _get(doc, route.seq_path))
        self._append(cols, route.device, values, ts, recv)
        return lost

    def _sequence(self, device: str, seq: object) -> int:
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < _MAX_SEQ:
            return 0
        last = self._last_seq.get(device)
        self._last_seq[device] = seq
        if last is None or seq <= last:
            return 0  # first message, or the device restarted its counter
        return seq - last - 1

    def _plain(
        self, route: Route, payload: bytes | bytearray, recv: float, cols: dict[str, list[Any]]
    ) -> None:
        try:
            # JSON's number grammar, not float(): float() takes "nan", "1_000" and " 12 ".
            doc = _loads(payload.decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            raise _Reject("malformed") from exc
        _, point, quantity, scale, optional = route.fields[0]
        value = _number(doc, optional)
        if value is not None:
            _scaled_ok(value, scale)
            self._append(cols, route.device, [(point, quantity, value, scale)], math.nan, recv)

    def _sparkplug(
        self, route: Route, payload: bytes | bytearray, recv: float, cols: dict[str, list[Any]]
    ) -> tuple[bool, int]:
        kind = route.variables["message_type"]
        if kind not in _SPARKPLUG_VALUE_TYPES:
            return False, 0  # DEATH, CMD, STATE: valid, no readings
        try:
            message = Payload.FromString(payload)
        except Exception as exc:  # protobuf raises its own DecodeError types
            raise _Reject("malformed") from exc
        node_key = (route.variables["group"], route.variables["node"])
        if kind == "NBIRTH":
            self._aliases[node_key] = {}
        aliases = self._aliases.setdefault(node_key, {})
        lost = 0
        if message.HasField("seq"):
            # One 0-255 counter per edge node across its N* and D* messages; BIRTH restarts it.
            last = self._sparkplug_seq.get(node_key)
            if last is not None and kind != "NBIRTH":
                lost = (message.seq - last - 1) % 256
            self._sparkplug_seq[node_key] = message.seq
        payload_ts = message.timestamp / 1e3 if message.HasField("timestamp") else math.nan
        values: list[tuple[str, str, float, float]] = []
        stamps: list[float] = []
        for metric in message.metrics:
            name = metric.name
            if metric.HasField("alias"):
                if name and kind.endswith("BIRTH"):
                    aliases[metric.alias] = name
                elif not name:
                    name = aliases.get(metric.alias, "")
                    if not name:
                        raise _Reject("unknown_alias")
            index = route.by_metric.get(name)
            if index is None:
                continue  # a metric the mapping does not ask for
            _, point, quantity, scale, optional = route.fields[index]
            value = _number(metric_value(metric), optional)
            if value is not None:
                _scaled_ok(value, scale)
                values.append((point, quantity, value, scale))
                stamps.append(metric.timestamp / 1e3 if metric.timestamp else payload_ts)
        for (point, quantity, value, scale), ts in zip(values, stamps, strict=True):
            self._append(cols, route.device, [(point, quantity, value, scale)], ts, recv)
        return True, lost

    @staticmethod
    def _append(
        cols: dict[str, list[Any]],
        device: str,
        values: list[tuple[str, str, float, float]],
        ts: float,
        recv: float,
    ) -> None:
        for point, quantity, value, scale in values:
            cols["device"].append(device)
            cols["point"].append(point)
            cols["quantity"].append(quantity)
            cols["value"].append(value)
            cols["scale"].append(scale)
            cols["ts"].append(ts)
            cols["recv"].append(recv)

    # -- frame --------------------------------------------------------------------------------

    def _frame(self, cols: dict[str, list[Any]]) -> pl.DataFrame:
        if not cols["device"]:
            return pl.DataFrame(schema=READING_SCHEMA)
        raw = pl.DataFrame(
            cols,
            schema={
                "device": pl.String(),
                "point": pl.String(),
                "quantity": pl.String(),
                "value": pl.Float64(),
                "scale": pl.Float64(),
                "ts": pl.Float64(),
                "recv": pl.Float64(),
            },
        )
        trusted = pl.col("ts").is_not_nan() & (
            (pl.col("ts") - pl.col("recv")).abs() <= self.max_skew_s
        )
        seconds = pl.when(trusted).then(pl.col("ts")).otherwise(pl.col("recv"))
        return raw.select(
            ts=(seconds * 1e6).round().cast(pl.Int64).cast(pl.Datetime("us", "UTC")),
            device=pl.col("device"),
            point=pl.col("point"),
            quantity=pl.col("quantity"),
            value=pl.col("value") * pl.col("scale"),
            quality=pl.when(trusted)
            .then(pl.lit(int(Quality.GOOD)))
            .otherwise(pl.lit(int(Quality.RECEIVE_TIME)))
            .cast(pl.UInt8),
        )
