"""Sparkplug B payload classes, built at import time from a hand-written descriptor.

Why not ``protoc``: a generated ``*_pb2.py`` pins the generator to the protobuf
runtime version and needs a compiler on the build machine. The descriptor below
is the subset of Eclipse Tahu's ``sparkplug_b.proto`` (package
``org.eclipse.tahu.protobuf``) that carries scalar metrics; fields we do not
declare (metadata, property sets, datasets, templates) are kept by the parser
as unknown fields, so real payloads that use them still parse.
"""

from __future__ import annotations

import enum
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = ["DataType", "Payload", "encode_payload", "metric_value"]


class DataType(enum.IntEnum):
    """Sparkplug B metric data types (``DataType`` enum in the specification)."""

    UNKNOWN = 0
    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13
    TEXT = 14


_F = descriptor_pb2.FieldDescriptorProto


def _build() -> Any:
    file = descriptor_pb2.FileDescriptorProto(
        name="pue_agent_sparkplug_b.proto", package="org.eclipse.tahu.protobuf", syntax="proto2"
    )
    payload = file.message_type.add(name="Payload")
    metric = payload.nested_type.add(name="Metric")
    metric.oneof_decl.add(name="value")
    scalar = [
        ("name", 1, _F.TYPE_STRING, None),
        ("alias", 2, _F.TYPE_UINT64, None),
        ("timestamp", 3, _F.TYPE_UINT64, None),
        ("datatype", 4, _F.TYPE_UINT32, None),
        ("is_historical", 5, _F.TYPE_BOOL, None),
        ("is_transient", 6, _F.TYPE_BOOL, None),
        ("is_null", 7, _F.TYPE_BOOL, None),
        ("int_value", 10, _F.TYPE_UINT32, 0),
        ("long_value", 11, _F.TYPE_UINT64, 0),
        ("float_value", 12, _F.TYPE_FLOAT, 0),
        ("double_value", 13, _F.TYPE_DOUBLE, 0),
        ("boolean_value", 14, _F.TYPE_BOOL, 0),
        ("string_value", 15, _F.TYPE_STRING, 0),
        ("bytes_value", 16, _F.TYPE_BYTES, 0),
    ]
    for name, number, ftype, oneof in scalar:
        field = metric.field.add(name=name, number=number, type=ftype, label=_F.LABEL_OPTIONAL)
        if oneof is not None:
            field.oneof_index = oneof
    for name, number, ftype in (
        ("timestamp", 1, _F.TYPE_UINT64),
        ("seq", 3, _F.TYPE_UINT64),
        ("uuid", 4, _F.TYPE_STRING),
        ("body", 5, _F.TYPE_BYTES),
    ):
        payload.field.add(name=name, number=number, type=ftype, label=_F.LABEL_OPTIONAL)
    payload.field.add(
        name="metrics",
        number=2,
        type=_F.TYPE_MESSAGE,
        label=_F.LABEL_REPEATED,
        type_name=".org.eclipse.tahu.protobuf.Payload.Metric",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("org.eclipse.tahu.protobuf.Payload")
    )


#: The ``org.eclipse.tahu.protobuf.Payload`` message class (``Payload.FromString(data)``).
Payload: Any = _build()

_SIGNED_BITS = {DataType.INT8: 8, DataType.INT16: 16, DataType.INT32: 32, DataType.INT64: 64}


def metric_value(metric: Any) -> float | int | bool | str | None:
    """The value of a decoded ``Payload.Metric`` as Python, honouring signed data types.

    Sparkplug carries Int8/16/32 in the unsigned ``int_value`` and Int64 in
    ``long_value`` as two's complement, so the data type decides the sign.
    Returns ``None`` for a null metric or one without a value.
    """
    if metric.is_null:
        return None
    kind = metric.WhichOneof("value")
    if kind is None:
        return None
    value: float | int | bool | str = getattr(metric, kind)
    bits = _SIGNED_BITS.get(metric.datatype)
    if bits is not None and isinstance(value, int) and value >= 1 << (bits - 1):
        value -= 1 << bits
    return value if kind != "bytes_value" else None


def encode_payload(
    metrics: list[dict[str, Any]], *, timestamp_ms: int | None = None, seq: int | None = None
) -> bytes:
    """Encode a payload (tests, benchmarks and the README's examples publish with this).

    Args:
        metrics: Dicts with ``name`` and/or ``alias``, ``datatype`` (:class:`DataType`),
            ``value`` and optionally ``timestamp`` (ms since the epoch).
        timestamp_ms: The payload timestamp.
        seq: The payload sequence number (0-255).

    Returns:
        The protobuf bytes.
    """
    message = Payload()
    if timestamp_ms is not None:
        message.timestamp = timestamp_ms
    if seq is not None:
        message.seq = seq
    for item in metrics:
        out = message.metrics.add()
        if "name" in item:
            out.name = item["name"]
        if "alias" in item:
            out.alias = item["alias"]
        if "timestamp" in item:
            out.timestamp = item["timestamp"]
        datatype = DataType(item["datatype"])
        out.datatype = datatype
        value = item.get("value")
        if value is None:
            out.is_null = True
        elif datatype == DataType.BOOLEAN:
            out.boolean_value = bool(value)
        elif datatype == DataType.FLOAT:
            out.float_value = float(value)
        elif datatype == DataType.DOUBLE:
            out.double_value = float(value)
        elif datatype in (DataType.STRING, DataType.TEXT):
            out.string_value = str(value)
        elif datatype in (DataType.INT64, DataType.UINT64, DataType.DATETIME):
            out.long_value = int(value) % (1 << 64)
        else:
            out.int_value = int(value) % (1 << 32)
    return bytes(message.SerializeToString())
