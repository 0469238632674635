"""Loads the shared testinfra helpers and the hook that prints the journal on failure, and
schedules pytest-xdist by host: with `-n 2` (molecule.yml) each worker takes one host's tests
and runs them in order, and the two hosts' at the same time."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from xdist.scheduler import LoadScopeScheduling

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared/lib"))

from dhis_testlib import one_host, pytest_runtest_makereport, scenario_hosts  # noqa: F401


class ByHost(LoadScopeScheduling):
    """One scope per host, read from the test's id (testinfra's `ansible://NAME` parameter)."""

    def __init__(self, config: Any, log: Any = None) -> None:
        super().__init__(config, log)
        # Longest first: a name that extends another must not be taken for it.
        self.hosts = sorted(scenario_hosts(), key=len, reverse=True)

    def _split_scope(self, nodeid: str) -> str:
        for name in self.hosts:
            if re.search(rf"\[ansible://{re.escape(name)}[-\]]", nodeid):
                return name
        return nodeid


# xdist's own `loadgroup` cannot do it: it renames test ids through an attribute that pytest 9
# no longer reads, so every test would land on any worker.
def pytest_xdist_make_scheduler(config: Any, log: Any) -> ByHost:
    return ByHost(config, log)
