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
    "GreenWindow": {
        "type": "object",
        "required": ["site", "computed_at", "method", "today_ratio", "storage_green_kwh", "hours"],
        "properties": {
            "site": {"type": "string"},
            "computed_at": {"type": "string", "format": "date-time"},
            "method": {"type": "string"},
            "today_ratio": {"type": "number", "minimum": 0},
            "storage_green_kwh": {"type": "number", "minimum": 0},
            "hours": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": [
                        "hour_start",
                        "hours_ahead",
                        "expected_load_kw",
                        "expected_onsite_kw",
                        "contract_kw",
                        "expected_surplus_kw",
                        "green_share",
                    ],
                    "properties": {
                        "hour_start": {"type": "string", "format": "date-time"},
                        "hours_ahead": {"type": "integer", "minimum": 0},
                        "expected_load_kw": {"type": "number"},
                        "expected_onsite_kw": {"type": "number"},
                        "contract_kw": {"type": "number"},
                        "expected_surplus_kw": {"type": "number", "minimum": 0},
                        "green_share": _NUMBER_OR_NULL,
                    },
                },
            },
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
    "FleetRow": {
        "type": "object",
        "description": "One site's latest summary in the fleet bucket (docs/cluster.md, Fleet).",
        "required": [
            "site",
            "month",
            "pue_month",
            "coverage_month",
            "pue_ttm",
            "ref_month",
            "ref_ttm",
            "age_s",
            "stale",
            "signature",
        ],
        "properties": {
            "site": {"type": "string"},
            "name": _STRING_OR_NULL,
            "month": {**_STRING_OR_NULL, "description": "The newest local month, YYYY-MM."},
            "category": {"type": "integer", "nullable": True},
            "pue_month": _NUMBER_OR_NULL,
            "pue_month_status": _STRING_OR_NULL,
            "coverage_month": _NUMBER_OR_NULL,
            "pue_ttm": _NUMBER_OR_NULL,
            "pue_ttm_status": _STRING_OR_NULL,
            "coverage_ttm": _NUMBER_OR_NULL,
            "ref_month": _NUMBER_OR_NULL,
            "ref_ttm": _NUMBER_OR_NULL,
            "cue_month": _NUMBER_OR_NULL,
            "cue_ttm": _NUMBER_OR_NULL,
            "computed_at": {**_STRING_OR_NULL, "format": "date-time"},
            "published_at": {**_STRING_OR_NULL, "format": "date-time"},
            "age_s": {**_NUMBER_OR_NULL, "description": "Seconds since published."},
            "stale": {"type": "boolean"},
            "signature": {"type": "string", "enum": ["valid", "unsigned", "INVALID"]},
            "signature_detail": {"type": "string"},
            "key_fingerprint": _STRING_OR_NULL,
            "agent_version": _STRING_OR_NULL,
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


#: The web console's JSON (agent/api/console.py, docs/console.md): open objects, since the
#: page reads them and may gain fields; the required keys are the contract.
_CONSOLE_SCHEMAS: dict[str, Any] = {
    "ConsoleSession": {
        "type": "object",
        "required": ["role", "site", "timezone", "version"],
        "properties": {
            "role": {"type": "string", "enum": ["ops", "auditor"]},
            "site": _STRING_OR_NULL,
            "site_name": _STRING_OR_NULL,
            "site_name_zh": _STRING_OR_NULL,
            "timezone": {"type": "string", "description": "The site's IANA time zone."},
            "version": {"type": "string"},
        },
    },
    "ConsoleOverview": {
        "type": "object",
        "required": ["site", "today", "month", "ttm", "hourly"],
        "properties": {
            "site": {"type": "string"},
            "today": {"type": "object", "description": "Stored day KPIs by metric."},
            "month": {"type": "object", "description": "Latest stored month KPIs by metric."},
            "ttm": {"type": "object", "description": "Latest stored TTM KPIs by metric."},
            "hourly": {
                "type": "array",
                "description": "Stored hourly energy PUE and mean power, last 24 hours.",
                "items": {"type": "object"},
            },
        },
    },
    "ConsoleLive": {
        "type": "object",
        "required": ["realtime", "silent_meters", "lag", "alarms", "sent_at"],
        "properties": {
            "realtime": {"type": "object", "nullable": True},
            "silent_meters": {"type": "array", "items": {"type": "object"}},
            "lag": {"type": "array", "items": {"type": "object"}},
            "lag_alarm_batches": {"type": "integer"},
            "journal": {"type": "object"},
            "alarms": {"type": "array", "items": {"type": "object"}},
            "sent_at": {"type": "string", "format": "date-time"},
        },
    },
    "ConsoleAudit": {
        "type": "object",
        "required": ["site", "key_fingerprint", "months"],
        "properties": {
            "site": _STRING_OR_NULL,
            "key_fingerprint": _STRING_OR_NULL,
            "public_key_pem": _STRING_OR_NULL,
            "months": {"type": "array", "items": {"type": "object"}},
        },
    },
    "ConsoleVerify": {
        "type": "object",
        "required": ["ok", "failed_check", "checks"],
        "properties": {
            "ok": {"type": "boolean"},
            "sha256": {"type": "string"},
            "size_bytes": {"type": "integer"},
            "key_fingerprint": _STRING_OR_NULL,
            "failed_check": _STRING_OR_NULL,
            "checks": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "outcome", "detail"],
                    "properties": {
                        "name": {"type": "string"},
                        "outcome": {
                            "type": "string",
                            "enum": ["ok", "failed", "skipped", "warning"],
                        },
                        "detail": {"type": "string"},
                    },
                },
            },
        },
    },
    "ConsoleLogin": {
        "type": "object",
        "required": ["role"],
        "properties": {"role": {"type": "string", "enum": ["ops", "auditor"]}},
    },
}


def _post(
    summary: str,
    responses: dict[str, Any],
    body: dict[str, Any],
    *,
    roles: tuple[str, ...] | None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "requestBody": {"required": True, "content": body},
        "responses": responses,
    }
    if roles is None:
        operation["security"] = []
    else:
        operation["description"] = f"Roles: {', '.join(roles)}; a bearer token or a session."
        operation["responses"] = {**responses, **_AUTH_ERRORS}
    return {"post": operation}


def _console_paths(month_path: dict[str, Any]) -> dict[str, Any]:
    """The console's endpoints (the page reads them with its session cookie)."""
    both = ("ops", "auditor")
    unavailable = _error("No site model or store.")
    cross = _error("A browser request from another origin.")
    return {
        "/api/v1/console/login": _post(
            "Exchange an API token for a console session (HttpOnly SameSite=Strict cookie).",
            {
                "200": _json("ConsoleLogin"),
                "400": _error("The body is not JSON."),
                "401": _error("Unknown token."),
                "403": cross,
            },
            {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["token"],
                        "properties": {"token": {"type": "string"}},
                    }
                }
            },
            roles=None,
        ),
        "/api/v1/console/session": _get(
            "Who the session (or token) is, and the site's name and time zone.",
            {"200": _json("ConsoleSession")},
            roles=both,
        ),
        "/api/v1/console/overview": _get(
            "Stored energy KPIs of today, this month and the TTM; the last 24 hours.",
            {"200": _json("ConsoleOverview"), "503": unavailable},
            roles=("ops",),
        ),
        "/api/v1/console/live": _get(
            "Real-time PUE, power by role, silent meters, journal lag and alarms "
            "(also streamed as server-sent events from /api/v1/console/events).",
            {"200": _json("ConsoleLive")},
            roles=("ops",),
        ),
        "/api/v1/console/audit": _get(
            "Months with a report bundle, their findings, the signing key's fingerprint.",
            {"200": _json("ConsoleAudit")},
            roles=both,
        ),
        "/api/v1/console/verify": _post(
            "Run the checks of `pue-agent verify` on an uploaded bundle (the .zip as the body).",
            {
                "200": _json(
                    "ConsoleVerify", "The checks (an empty or non-zip body fails the first)."
                ),
                "403": cross,
                "413": _error("Bundle too large."),
            },
            {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            roles=both,
        ),
        "/api/v1/reports/{month}/pdf": _get(
            "The PDF of a month's report, taken from its bundle.",
            {
                "200": _content("application/pdf", {"type": "string", "format": "binary"}),
                "400": _error("Not a month or not a language."),
                "404": _error("No bundle, or no PDF in that language."),
            },
            roles=both,
            parameters=[
                month_path,
                {
                    "name": "lang",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["zh", "en"]},
                },
            ],
        ),
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
        "/api/v1/green-window": _get(
            "Green-window signal: expected green surplus (kW) and green share for the current "
            "hour and the next 24 (forecast method stated in the body).",
            {"200": _json("GreenWindow"), "503": unavailable},
            roles=("ops", "auditor"),
        ),
        "/api/v1/fleet": _get(
            "Every site's PUE, REF and coverage as last published to the fleet's NATS KV "
            "bucket, with age, staleness and signature status (same rows as "
            "`pue-agent kpi --fleet --json`).",
            {
                "200": _content(
                    "application/json",
                    {"type": "array", "items": {"$ref": "#/components/schemas/FleetRow"}},
                ),
                "400": _error("Bad stale_after_s."),
                "404": _error("No NATS configured for the fleet on this agent."),
                "503": _error("NATS unreachable or refused, or bad fleet options."),
            },
            roles=("ops", "auditor"),
            parameters=[
                {
                    "name": "stale_after_s",
                    "in": "query",
                    "required": False,
                    "description": "Seconds after which a summary is stale "
                    "(default: the sink's, or twice the site's heartbeat).",
                    "schema": {"type": "number", "exclusiveMinimum": True, "minimum": 0},
                }
            ],
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
        **_console_paths(month_path),
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
            "schemas": {**_SCHEMAS, **_CONSOLE_SCHEMAS},
        },
        "security": [{"bearer": []}],
    }
