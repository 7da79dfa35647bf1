"""Run one site aggregator host in a process of its own, until killed (``SIGKILL`` in tests).

``python -m tests.cluster.spawn '<json>'`` with ``{"state_dir", "link", "holder",
"collector"}``: the same agent as :func:`tests.cluster.helpers.aggregator_agent`, so a
test can kill it the hard way — no clean stop, no lease released.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from tests.cluster.helpers import aggregator_agent


async def _main(spec: dict[str, Any]) -> None:
    running = aggregator_agent(
        Path(spec["state_dir"]), spec["link"], spec["holder"], **spec["collector"]
    )
    await running.task


if __name__ == "__main__":
    asyncio.run(_main(json.loads(sys.argv[1])))
