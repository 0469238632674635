"""Liveness rounds (dhis_celery_liveness_*): a worker whose process lives but answers nothing (here
frozen with SIGSTOP) is restarted by the timer's round with a warm shutdown, and every task it had
taken or reserved runs. Rounds come every 5 s with a 3 s ping for this test (put back after)."""

from __future__ import annotations

import time
from typing import Any

from dhis_testlib import completed, run, send_batch, wait_for

WORKER, TIMER = "celery-worker@default", "celery-liveness.timer"
DROPIN_DIR = f"/run/systemd/system/{TIMER}.d"
CONFIG = "/etc/dhis-celery/liveness.json"


def main_pid(host: Any) -> str:
    return run(host, f"systemctl show -p MainPID --value {WORKER}").strip()


def test_a_frozen_worker_is_restarted_and_none_of_its_tasks_is_lost(one_host: Any) -> None:
    host = one_host
    assert run(host, f"systemctl is-active {TIMER}").strip() == "active"
    assert run(host, f"systemctl is-enabled {TIMER}").strip() == "enabled"
    # Rounds every 5 s, each ping given 3 s, for this test only (put back below).
    run(host, f'cp {CONFIG} {CONFIG}.kept && sed -i \'s/"timeout": [0-9]*/"timeout": 3/\' {CONFIG}')
    run(
        host,
        f"mkdir -p {DROPIN_DIR} && printf '[Timer]\\nOnUnitActiveSec=5\\n' > {DROPIN_DIR}/test.conf"
        f" && systemctl daemon-reload && systemctl restart {TIMER}",
    )
    pid, batch = main_pid(host), int(time.time()) % 10**9
    try:
        send_batch(host, batch, 8, work_seconds=2)
        since = run(host, "date +%s").strip()
        run(host, f"kill -STOP {pid}")
        assert wait_for(lambda: main_pid(host) not in {pid, "0"}, timeout=120, every=2)
        rounds = run(host, f"journalctl -q -o cat -u celery-liveness.service --since @{since}")
        assert f"{WORKER}.service did not answer 2 pings in a row: restarting it" in rounds, rounds
        assert wait_for(lambda: completed(host, batch)[0] == 8, timeout=90)
    finally:
        host.run(f"kill -CONT {pid}")
        run(
            host,
            f"mv {CONFIG}.kept {CONFIG} && rm -rf {DROPIN_DIR} && systemctl daemon-reload && systemctl restart {TIMER}",
        )
    assert run(host, f"systemctl is-active {WORKER}").strip() == "active"
