"""Collectors: one package per protocol, each with a README and a sample config."""
