"""Fault injection against the real agent and real servers (issue 22)."""
