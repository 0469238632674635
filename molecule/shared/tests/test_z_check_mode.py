"""Last on each host of the default scenario (hence the z): after the suites that re-converge or
restart on that host (fault, survival, memory, ...), site.yml in check mode with --diff reports
no change there, and restarts nothing."""

from __future__ import annotations

import re
from typing import Any

from dhis_testlib import play

STARTS = "systemctl show -p Id -p ActiveEnterTimestampMonotonic 'celery*' 'redis-server*'"


def starts(host: Any) -> dict[str, str]:
    """When each Celery and Redis unit last entered `active`, by unit. Not the units that never
    did (the timers' oneshots): systemd loads and unloads them as they run, so whether the
    pattern lists them depends on the moment."""
    lines = host.run(STARTS).stdout.split()
    pairs = zip(lines[::2], lines[1::2], strict=True)
    found = {unit.removeprefix("Id="): when.removeprefix("ActiveEnterTimestampMonotonic=") for unit, when in pairs}
    return {unit: when for unit, when in found.items() if when != "0"}


def test_site_in_check_mode_reports_no_change_on_a_converged_host(host: Any) -> None:
    name = host.backend.get_hostname()
    before = starts(host)
    result = play(name, {}, "--check", "--diff")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    recap = re.search(rf"^{re.escape(name)}\s*:\s*ok=\d+\s+changed=(\d+)", result.stdout, re.M)
    assert recap, result.stdout[-3000:]
    changed = re.findall(r"^changed: \[.*$", result.stdout, re.M)
    assert recap.group(1) == "0", changed
    after = starts(host)
    assert after == before, {
        unit: (before.get(unit), after.get(unit))
        for unit in before.keys() | after.keys()
        if before.get(unit) != after.get(unit)
    }
