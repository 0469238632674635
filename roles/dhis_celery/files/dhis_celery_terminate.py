"""Terminate a running task (playbooks/ops.yml, dhis_celery_ops_action=terminate).

Run by the role as the application user with the units' settings:
    dhis-celery python -c "$(cat dhis_celery_terminate.py)" TASK_ID GRACE_SECONDS
The task is revoked (a waiting copy is discarded). Where it runs, its pool process gets SIGTERM,
then SIGKILL if it still runs after the grace period. Only a prefork pool runs a task in a
process of its own: on a threads, gevent, eventlet or solo pool, killing the task would kill
the worker and every other task it runs, so the action is refused (exit status 4) before any
signal. Prints one line saying what was done; exit status 5 if the task outlived SIGKILL.
"""

from __future__ import annotations

import sys
import time

import django

django.setup()

from celery import current_app as app  # noqa: E402  (after django.setup())

KILLABLE_POOL = "celery.concurrency.prefork:TaskPool"


def running_on(task_id: str) -> list[str]:
    active = app.control.inspect(timeout=3).active() or {}
    return sorted(worker for worker, tasks in active.items() if any(task["id"] == task_id for task in tasks))


def wait_gone(task_id: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not running_on(task_id):
            return True
        time.sleep(1)
    return not running_on(task_id)


def main(task_id: str, grace: float) -> int:
    workers = running_on(task_id)
    if not workers:
        app.control.revoke(task_id)
        print(f"{task_id} runs on no worker: revoked (a waiting copy is discarded when a worker takes it).")
        return 0
    stats = app.control.inspect(timeout=3, destination=workers).stats() or {}
    pools = {worker: stats.get(worker, {}).get("pool", {}).get("implementation", "unknown") for worker in workers}
    refused = {worker: pool for worker, pool in pools.items() if pool != KILLABLE_POOL}
    if refused:
        print(
            f"{task_id} runs on {', '.join(refused)} whose pool ({', '.join(sorted(set(refused.values())))}) runs "
            "tasks inside the worker's own process: one task cannot be killed there without the others. Nothing was "
            "signalled. Restart that worker instance instead (a warm shutdown waits for its tasks).",
            file=sys.stderr,
        )
        return 4
    app.control.revoke(task_id, terminate=True, signal="SIGTERM")
    if wait_gone(task_id, grace):
        print(f"{task_id} terminated on {', '.join(workers)} (SIGTERM).")
        return 0
    app.control.revoke(task_id, terminate=True, signal="SIGKILL")
    if wait_gone(task_id, 15):
        print(f"{task_id} killed on {', '.join(workers)} (SIGKILL after {grace:g} s of SIGTERM).")
        return 0
    print(f"{task_id} still runs on {', '.join(workers)} after SIGTERM and SIGKILL.", file=sys.stderr)
    return 5


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], float(sys.argv[2])))
