"""What every test of the session shares."""

from __future__ import annotations

import os

from agent.settings import CONFIG_ENV

# The packaging tests install the .deb, and with it /etc/pue-agent/agent.toml, while other
# xdist workers run other tests: no test, and no agent or CLI a test starts, may pick that
# file up as its default config (tests/packaging gives its commands the host's environment).
os.environ[CONFIG_ENV] = ""
