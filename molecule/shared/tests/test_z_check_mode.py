"""Last in the default scenario (hence the z): after the fault suite, the survival tests and every
test that re-converges or restarts, site.yml in check mode with --diff on the first host reports
no change, and restarts nothing."""

from __future__ import annotations

import re
from typing import Any

from dhis_testlib import play

STARTS = "systemctl show -p Id -p ActiveEnterTimestampMonotonic 'celery*' 'redis-server*'"


def test_site_in_check_mode_reports_no_change_on_a_converged_host(first_host: Any) -> None:
    name = first_host.backend.get_hostname()
    before = first_host.run(STARTS).stdout
    result = play(name, {}, "--check", "--diff")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    recap = re.search(rf"^{re.escape(name)}\s*:\s*ok=\d+\s+changed=(\d+)", result.stdout, re.M)
    assert recap, result.stdout[-3000:]
    changed = re.findall(r"^changed: \[.*$", result.stdout, re.M)
    assert recap.group(1) == "0", changed
    assert first_host.run(STARTS).stdout == before
