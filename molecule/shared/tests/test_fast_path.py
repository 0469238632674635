"""The fast path of a no-change run (tasks/fast_check.yml): site.yml on a host as its last full
run left it runs the health gate alone; a file or a unit moved by hand makes the next run a full
one, which puts it back, and names what moved."""

from __future__ import annotations

import re
from typing import Any

from dhis_testlib import play, run

# The include of tasks/fast.yml (the default callback names the file it includes) and a task of
# tasks/converge.yml: each only on its own path.
FAST = "/tasks/fast.yml for "
FULL = "TASK [dhis_celery : Settings | Render the settings"


def recap(output: str) -> dict[str, int]:
    line = output.split("PLAY RECAP")[-1]
    return {key: int(value) for key, value in re.findall(r"(ok|changed|skipped|failed)=(\d+)", line)}


def test_a_moved_file_or_unit_makes_a_full_run_that_puts_them_back_then_the_fast_path(one_host: Any) -> None:
    name = one_host.backend.get_hostname()
    # The full run that leaves a record for this host alone (the tests run site.yml with --limit).
    first = play(name, {})
    assert first.returncode == 0, first.stdout[-3000:]
    env_file = "/etc/dhis-celery/worker-default.env"
    before = run(one_host, f"cat {env_file}")
    run(one_host, f"echo 'CELERY_EXTRA=by hand' >> {env_file}")
    run(one_host, "systemctl stop celery-beat.service")

    full = play(name, {}, "-v")
    assert full.returncode == 0, full.stdout[-3000:]
    reasons = re.search(r'"reasons": \[([^]]*)\]', full.stdout)
    assert reasons and env_file in reasons.group(1) and "celery-beat.service" in reasons.group(1), full.stdout[-3000:]
    assert FULL in full.stdout and FAST not in full.stdout
    assert recap(full.stdout)["changed"] > 0
    assert run(one_host, f"cat {env_file}") == before
    assert run(one_host, "systemctl is-active celery-beat.service").strip() == "active"

    fast = play(name, {})
    assert fast.returncode == 0, fast.stdout[-3000:]
    counts = recap(fast.stdout)
    assert FAST in fast.stdout and FULL not in fast.stdout, fast.stdout[-3000:]
    assert counts["changed"] == 0 and counts["ok"] + counts["skipped"] < 30, counts
