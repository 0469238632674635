"""Liveness rounds on a worker that answers and runs nothing. shop's threads worker, wedged by a
task that makes its pool take no more work (its consumer keeps answering pings, as the gevent
worker of docs/PERFORMANCE.md did), is restarted by the rounds and the tasks it held run. Tasks
waiting in the worker on their rate limit are not taken for a wedge. Rounds come every 5 s with a
3 s timeout for this test (put back after)."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from dhis_testlib import run, wait_for

WORKER, TIMER = "shop-worker@main.service", "shop-liveness.timer"
DROPIN_DIR = f"/run/systemd/system/{TIMER}.d"
CONFIG = "/etc/shop-celery/liveness.json"


def shop(host: Any, code: str) -> str:
    script = "import django; django.setup()\n" + code
    return run(host, f"shop-celery python -c {shlex.quote(script)}").strip().splitlines()[-1]


def main_pid(host: Any) -> str:
    return run(host, f"systemctl show -p MainPID --value {WORKER}").strip()


def rounds_since(host: Any, since: str) -> str:
    return run(host, f"journalctl -q -o cat -u shop-liveness.service --since @{since}")


def test_a_worker_holding_tasks_it_does_not_run_is_restarted_and_they_run(host: Any) -> None:
    run(host, f'cp {CONFIG} {CONFIG}.kept && sed -i \'s/"timeout": [0-9]*/"timeout": 3/\' {CONFIG}')
    run(
        host,
        f"mkdir -p {DROPIN_DIR} && printf '[Timer]\\nOnUnitActiveSec=5\\n' > {DROPIN_DIR}/test.conf"
        f" && systemctl daemon-reload && systemctl restart {TIMER}",
    )
    pid = main_pid(host)
    try:
        # Three tasks of a 6/m type: one runs, the next two wait 10 s each in the worker, reserved.
        since = run(host, "date +%s").strip()
        paced = "from jobs.tasks import paced\nresults = [paced.delay() for _ in range(3)]\n"
        paced += "print(sum(result.get(timeout=60) for result in results))"
        assert shop(host, paced) == "3"
        assert "reserved task(s) and runs none" not in rounds_since(host, since)
        assert main_pid(host) == pid

        since = run(host, "date +%s").strip()
        wedged = "from jobs.tasks import add, wedge\nassert wedge.delay().get(timeout=30) == 1\n"
        wedged += "print(json.dumps([add.delay(2, 3).id for _ in range(3)]))"
        ids = json.loads(shop(host, "import json\n" + wedged))
        assert wait_for(lambda: main_pid(host) not in {pid, "0"}, timeout=90, every=2)
        # The three adds, and Beat's ticks the worker took after the wedge (up to its prefetch of 4).
        held = re.search(
            rf"{WORKER} has held (\d) reserved task\(s\) and run none of them for 2 rounds in a row",
            rounds_since(host, since),
        )
        assert held and 3 <= int(held[1]) <= 4, rounds_since(host, since)
        collect = "from celery.result import AsyncResult\n"
        collect += f"print(sum(AsyncResult(i).get(timeout=60) for i in {ids!r}))"
        assert shop(host, collect) == "15"
    finally:
        run(
            host,
            f"mv {CONFIG}.kept {CONFIG} && rm -rf {DROPIN_DIR} && systemctl daemon-reload && systemctl restart {TIMER}",
        )
    assert run(host, f"systemctl is-active {WORKER}").strip() == "active"
