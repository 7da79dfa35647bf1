"""Where the tests find the project and the shared, read-only device fixtures."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: ``shared/`` lies beside the project checkout (in CI too); never copy it in.
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures"
