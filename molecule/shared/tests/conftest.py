"""Loads the shared testinfra helpers and the hook that prints the journal on failure, and gives
each host its own pytest-xdist group: with `--dist loadgroup` (molecule.yml) a host's tests run
in order on one worker, and the hosts' at the same time."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared/lib"))

from dhis_testlib import one_host, pytest_runtest_makereport  # noqa: F401


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        params = getattr(item, "callspec", None) and item.callspec.params
        if params and "_testinfra_host" in params:
            item.add_marker(pytest.mark.xdist_group(params["_testinfra_host"]))
