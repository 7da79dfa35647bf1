"""``python -m agent`` is the ``pue-agent`` command."""

from agent.cli import main

main()
