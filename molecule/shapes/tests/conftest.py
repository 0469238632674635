"""Loads the shared testinfra helpers and the hook that prints the journal on failure."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared/lib"))

from dhis_testlib import one_host, pytest_runtest_makereport  # noqa: F401
