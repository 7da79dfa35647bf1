"""The agent's HTTP API: health, Prometheus metrics, KPIs, findings and report downloads.

Its settings model (``[api]``) is :class:`agent.settings.ApiSettings`; the server
(:mod:`agent.api.server`, aiohttp) is started by :mod:`agent.service` when enabled.
"""
