"""Where the tests find the project and its device fixtures (``tests/fixtures/``)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Captured device data the tests serve (SNMP walks, Redfish trees, MQTT payloads), each
#: folder with a ``PROVENANCE`` file naming its source and licence. Test data only.
FIXTURES = ROOT / "tests" / "fixtures"
