"""The ha scenario's hosts by name: three RabbitMQ nodes and the project's web, worker and Beat hosts."""

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import testinfra

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared/lib"))

from dhis_testlib import pytest_runtest_makereport  # noqa: F401

NODES = ("dhis-ha-rmq1", "dhis-ha-rmq2", "dhis-ha-rmq3")
APP, WORKER_HOST, BEAT_HOST = "dhis-ha-app", "dhis-ha-worker", "dhis-ha-beat"
PROJECT = (APP, WORKER_HOST, BEAT_HOST)


@pytest.fixture(scope="session")
def ha() -> dict[str, Any]:
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    names = (*NODES, *PROJECT)
    return {name: testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory) for name in names}
