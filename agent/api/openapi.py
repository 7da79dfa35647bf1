"""The OpenAPI 3.0 description served at ``/openapi.json`` (tested with schemathesis).

Written by hand rather than generated: the API is small, and a hand-written
description is the contract clients and auditors read, so it changes only on
purpose.
"""

from __future__ import annotations

from typing import Any

from agent import __version__
from agent.periods import MONTH_RE, PERIOD_RE
from agent.schemas import PeriodKind

__all__ = ["openapi_document"]

_MONTH = MONTH_RE.pattern
_PERIOD = PERIOD_RE.pattern


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _content(media: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": "OK", "content": {media: {"schema": schema}}}


def _json(ref: str, description: str = "OK") -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


_AUTH_ERRORS = {
    "401": _error("No or unknown bearer token."),
    "403": _error("The token's role may not call this endpoint."),
}
_NUMBER_OR_NULL = {"type": "number", "nullable": True}
_STRING_OR_NULL = {"type": "string", "nullable": True}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "status"],
        "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
    },
    "Health": {
        "type": "object",
        "required": ["status", "version"],
        "properties": {
            "status": {"type": "string", "enum": ["ok"]},
            "version": {"type": "string", "description": "The agent's version."},
        },
    },
    "Ready": {
        "type": "object",
        "required": ["ready", "reasons"],
        "properties": {
            "ready": {"type": "boolean"},
            "reasons": {"type": "array", "items": {"type": "string"}},
        },
    },
    "RealtimeKpi": {
        "type": "object",
        "required": [
            "label",
            "site",
            "pue_realtime",
            "e_dc_power_w",
            "e_it_power_w",
            "power_by_role_w",
            "meters_reporting",
            "meters_total",
            "as_of",
        ],
        "properties": {
            "label": {"type": "string", "enum": ["realtime"]},
            "site": {"type": "string"},
            "pue_realtime": _NUMBER_OR_NULL,
            "e_dc_power_w": _NUMBER_OR_NULL,
            "e_it_power_w": _NUMBER_OR_NULL,
            "power_by_role_w": {"type": "object", "additionalProperties": {"type": "number"}},
            "meters_reporting": {"type": "integer", "minimum": 0},
            "meters_total": {"type": "integer", "minimum": 0},
            "as_of": {**_STRING_OR_NULL, "format": "date-time"},
        },
    },
    "KpiRow": {
        "type": "object",
        "required": ["period_kind", "period", "metric", "value", "status"],
        "properties": {
            "site": {"type": "string"},
            "period_kind": {"type": "string"},
            "period": {"type": "string"},
            "period_start": {**_STRING_OR_NULL, "format": "date-time"},
            "period_end": {**_STRING_OR_NULL, "format": "date-time"},
            "metric": {"type": "string"},
            "value": _NUMBER_OR_NULL,
            "unit": _STRING_OR_NULL,
            "status": {"type": "string"},
            "coverage": _NUMBER_OR_NULL,
            "category": {"type": "integer", "nullable": True},
        },
    },
    "KpiList": {
        "type": "object",
        "required": ["site", "period", "kind", "kpis"],
        "properties": {
            "site": {"type": "string"},
            "period": {"type": "string"},
            "kind": _STRING_OR_NULL,
            "kpis": {"type": "array", "items": {"$ref": "#/components/schemas/KpiRow"}},
        },
    },
    "FindingList": {
        "type": "object",
        "required": ["site", "period", "findings"],
        "properties": {
            "site": {"type": "string"},
            "period": {"type": "string"},
            "findings": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["policy_id", "rule_id", "result"],
                    "properties": {
                        "policy_id": {"type": "string"},
                        "rule_id": {"type": "string"},
                        "result": {
                            "type": "string",
                            "enum": [
                                "eligible",
                                "not_eligible",
                                "insufficient_data",
                                "not_applicable",
                            ],
                        },
                    },
                },
            },
        },
    },
}


def _get(
    summary: str,
    responses: dict[str, Any],
    *,
    roles: tuple[str, ...] | None,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if roles is None:
        operation["security"] = []
    else:
        operation["description"] = f"Roles: {', '.join(roles)}."
        operation["responses"] = {**responses, **_AUTH_ERRORS}
    if parameters:
        operation["parameters"] = parameters
    return {"get": operation}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.0.3 description of the agent's HTTP API."""
    version = __version__
    unavailable = _error("The data source is not available (no site model, store or engine).")
    period = {
        "name": "period",
        "in": "query",
        "required": True,
        "description": "Site-local label: month YYYY-MM, day YYYY-MM-DD or hour YYYY-MM-DDTHH.",
        "schema": {"type": "string", "pattern": _PERIOD},
    }
    kind = {
        "name": "kind",
        "in": "query",
        "required": False,
        "description": "Only KPIs of this window (a month label carries month and ttm rows).",
        "schema": {"type": "string", "enum": [k.value for k in PeriodKind]},
    }
    month_query = {
        "name": "period",
        "in": "query",
        "required": True,
        "description": "The evaluated month, YYYY-MM (site-local).",
        "schema": {"type": "string", "pattern": _MONTH},
    }
    month_path = {
        "name": "month",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": _MONTH},
    }
    paths = {
        "/healthz": _get(
            "Liveness: the agent's event loop answers.", {"200": _json("Health")}, roles=None
        ),
        "/readyz": _get(
            "Readiness: collectors running, not stopping, journal within budget.",
            {"200": _json("Ready"), "503": _json("Ready", "Not ready; reasons listed.")},
            roles=None,
        ),
        "/openapi.json": _get(
            "This description.",
            {"200": _content("application/json", {"type": "object"})},
            roles=None,
        ),
        "/metrics": _get(
            "The agent's own health metrics (Prometheus text format).",
            {"200": _content("text/plain", {"type": "string"})},
            roles=("ops",),
        ),
        "/api/v1/kpi/current": _get(
            "Real-time PUE and power by role (a power ratio, labelled realtime).",
            {"200": _json("RealtimeKpi"), "503": unavailable},
            roles=("ops", "auditor"),
        ),
        "/api/v1/kpi": _get(
            "Period KPIs from the local interval store.",
            {"200": _json("KpiList"), "400": _error("Bad period or kind."), "503": unavailable},
            roles=("ops", "auditor"),
            parameters=[period, kind],
        ),
        "/api/v1/findings": _get(
            "Policy findings for a month (rules engine over the stored KPIs).",
            {"200": _json("FindingList"), "400": _error("Bad period."), "503": unavailable},
            roles=("ops",),
            parameters=[month_query],
        ),
        "/api/v1/reports/{month}": _get(
            "The signed report bundle of a month, byte for byte as written on disk.",
            {
                "200": {
                    "description": "The bundle.",
                    "content": {
                        "application/zip": {"schema": {"type": "string", "format": "binary"}}
                    },
                },
                "400": _error("Not a month."),
                "404": _error("No bundle for this month."),
            },
            roles=("ops", "auditor"),
            parameters=[month_path],
        ),
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "pue-agent API",
            "version": version,
            "description": (
                "Read-only API of the pue-agent daemon. Bearer tokens: role ops reads "
                "everything, role auditor reads KPIs and reports."
            ),
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _SCHEMAS,
        },
        "security": [{"bearer": []}],
    }
