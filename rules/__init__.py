"""Policy packs (data) and the engine that evaluates them against KPI history."""
