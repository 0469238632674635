"""The cluster's hosts by name (tests here address each host for what it alone should do)."""

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import testinfra

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared/lib"))

from dhis_testlib import pytest_runtest_makereport  # noqa: F401

NAMES = ("broker", "web", "sync", "monitor", "beat")


@pytest.fixture(scope="session")
def cluster() -> dict[str, Any]:
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return {name: testinfra.get_host(f"ansible://dhis-cl-{name}", ansible_inventory=inventory) for name in NAMES}
