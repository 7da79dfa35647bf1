"""The agent's HTTP API: health, Prometheus metrics, KPIs, findings and report downloads.

Only :mod:`agent.api.config` is imported eagerly (the settings model needs it);
the server (:mod:`agent.api.server`, aiohttp) is imported only when the API is
enabled, so an agent without the API never loads the HTTP stack.
"""

from agent.api.config import ApiSettings

__all__ = ["ApiSettings"]
