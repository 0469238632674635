"""playbooks/ops.yml (the guide's troubleshooting) and the monitoring endpoint, on a live host."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from dhis_testlib import completed, django, http, play, queued, run, send_batch, wait_for


def ops(host: Any, **extra: str) -> str:
    result = play(host.backend.get_hostname(), extra, playbook="playbooks/ops.yml")
    assert result.returncode == 0, result.stdout[-3000:]
    return result.stdout


def test_ops_does_nothing_without_an_action(one_host: Any) -> None:
    result = play(one_host.backend.get_hostname(), {}, playbook="playbooks/ops.yml")
    assert result.returncode != 0 and "dhis_celery_ops_action" in result.stdout + result.stderr


def test_purge_empties_a_queue(one_host: Any) -> None:
    run(one_host, "systemctl stop celery-worker@default")
    try:
        send_batch(one_host, 9101, 10)
        assert queued(one_host, "sync") >= 10
        out = ops(one_host, dhis_celery_ops_action="purge", dhis_celery_ops_queue="sync")
        assert queued(one_host, "sync") == 0
        assert re.search(r"Purged 1\d messages", out), out[-2000:]
    finally:
        run(one_host, "systemctl start celery-worker@default")


def test_revoke_stops_a_waiting_task_even_across_a_worker_restart(one_host: Any) -> None:
    # Two 12 s tasks occupy both worker processes (prefetch 1), so the target waits in Redis.
    send_batch(one_host, 9105, 2, work_seconds=12)
    task_id = str(uuid.uuid4())
    django(
        one_host,
        f"""
from dhis_app.models import SyncConfig
from dhis_app.services.auto_sync.celery_tasks import celery_trigger_auto_sync
SyncConfig.objects.get_or_create(pk=9102, defaults={{"name": "revoke"}})
celery_trigger_auto_sync.apply_async((9102,), task_id={task_id!r})
""",
    )
    assert queued(one_host, "sync") >= 1
    ops(one_host, dhis_celery_ops_action="revoke", dhis_celery_ops_task_id=task_id)
    # The revoke outlives a restart of the workers (their --statedb) while the target still waits:
    # the warm shutdown lets the two running tasks finish, the new processes skip the target.
    run(one_host, "systemctl restart 'celery-worker@*'")
    assert wait_for(lambda: completed(one_host, 9105)[0] == 2, timeout=40)
    send_batch(one_host, 9103, 3)
    assert wait_for(lambda: completed(one_host, 9103)[0] == 3, timeout=30)
    assert completed(one_host, 9102)[0] == 0
    assert queued(one_host, "sync") == 0


def active(host: Any, task_id: str) -> bool:
    code = (
        "from celery import current_app as app\n"
        "print(any(t['id'] == {0!r} for ts in (app.control.inspect(timeout=3).active() or {{}}).values() for t in ts))"
    )
    return django(host, code.format(task_id)).strip() == "True"


def test_terminate_kills_a_task_that_never_ends_and_the_worker_carries_on(one_host: Any) -> None:
    """The guide's "tuer les tâches actives": a running task gets SIGTERM, then SIGKILL after the
    grace period; the worker (prefork) replaces that pool process and goes on."""
    task_id = str(uuid.uuid4())
    django(
        one_host,
        f"""
from dhis_app.models import SyncConfig
from dhis_app.services.auto_sync.celery_tasks import celery_trigger_auto_sync
SyncConfig.objects.get_or_create(pk=9106, defaults={{"name": "terminate"}})
celery_trigger_auto_sync.apply_async(kwargs={{"config_id": 9106, "work_seconds": 100000}}, task_id={task_id!r})
""",
    )
    assert wait_for(lambda: active(one_host, task_id), timeout=30)
    worker = run(one_host, "systemctl show -p MainPID --value celery-worker@default").strip()
    out = ops(
        one_host,
        dhis_celery_ops_action="terminate",
        dhis_celery_ops_task_id=task_id,
        dhis_celery_ops_terminate_grace="10",
    )
    assert re.search(rf"{task_id} (terminated|killed) on ", out), out[-2000:]
    assert not active(one_host, task_id)
    assert completed(one_host, 9106)[0] == 0
    assert run(one_host, "systemctl show -p MainPID --value celery-worker@default").strip() == worker
    send_batch(one_host, 9107, 4)
    assert wait_for(lambda: completed(one_host, 9107)[0] == 4, timeout=30)


def test_restart_restarts_every_unit_in_order(one_host: Any) -> None:
    before = run(one_host, "systemctl show -p MainPID --value celery-worker@default celery-beat celery-flower")
    out = ops(one_host, dhis_celery_ops_action="restart")
    after = run(one_host, "systemctl show -p MainPID --value celery-worker@default celery-beat celery-flower")
    assert set(before.split()).isdisjoint(after.split())
    assert out.index("celery-worker@default") < out.index("celery-beat") < out.index("celery-flower.service")


def test_failed_lists_a_failing_task(one_host: Any) -> None:
    """Flower lists the failed tasks whose events it saw. The test before this one restarts every
    unit, and a task that fails before Flower's event receiver is back goes unseen: so a new
    failing task is sent on each try, and one of them must be listed."""
    sent: list[str] = []

    def listed() -> bool:
        task_id = str(uuid.uuid4())
        sent.append(task_id)
        django(
            one_host,
            f"""
from dhis_app.services.auto_sync.celery_tasks import celery_monitor_and_sync
celery_monitor_and_sync.apply_async(("not-a-number",), task_id={task_id!r})
""",
        )
        time.sleep(2)
        report = ops(one_host, dhis_celery_ops_action="failed")
        return any(task_id in report for task_id in sent)

    assert wait_for(listed, timeout=60, every=1), f"none of {sent} listed as failed"


def test_flower_metrics_carry_celery_events_on_loopback(one_host: Any) -> None:
    send_batch(one_host, 9104, 3)
    assert wait_for(lambda: completed(one_host, 9104)[0] == 3, timeout=30)
    status, body = http(one_host, "/metrics", port=5555)
    assert status == 200
    assert re.search(r'flower_events_total\{[^}]*type="task-succeeded"[^}]*\} [1-9]', body)
