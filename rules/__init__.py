"""Policy packs (data) and the engine that evaluates them against KPI history."""

from rules.engine import (
    WarningChange,
    benefit_payments,
    claim_state,
    evaluate,
    evaluate_for_site,
    warning_changes,
)
from rules.pack import (
    BUILTIN_DIR,
    DEFAULT_POLICIES_DIR,
    POLICIES_DIR_ENV,
    LoadedPacks,
    Pack,
    PackError,
    Rule,
    configured_policies_dir,
    load_pack,
    load_packs,
    parse_pack,
)

__all__ = [
    "BUILTIN_DIR",
    "DEFAULT_POLICIES_DIR",
    "POLICIES_DIR_ENV",
    "LoadedPacks",
    "Pack",
    "PackError",
    "Rule",
    "WarningChange",
    "benefit_payments",
    "claim_state",
    "configured_policies_dir",
    "evaluate",
    "evaluate_for_site",
    "load_pack",
    "load_packs",
    "parse_pack",
    "warning_changes",
]
