"""Fault suite: real tasks through real faults; every task must complete, none lost.

Each task records its own id once (dhis_app.SyncRun, unique per task id; a redelivered task
increments `runs`, which counts duplicates). Sizes come from the environment: `make test` runs
the short form; `make reliability` the full one (500 tasks of 0.2 s, 1000 waiting messages,
a 30 s Redis outage) and writes docs/RELIABILITY.md.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from dhis_testlib import completed, django, play, queued, run, send_batch, setting, wait_for

BATCH = int(os.environ.get("DHIS_FAULT_BATCH", "100"))
WORK = float(os.environ.get("DHIS_FAULT_WORK", "0.2"))
WAITING = int(os.environ.get("DHIS_FAULT_WAITING", "300"))
OUTAGE = int(os.environ.get("DHIS_FAULT_OUTAGE", "10"))
REPORT = os.environ.get("DHIS_FAULT_REPORT", "")
ROWS: list[dict] = []
WORKER = "celery-worker@default"


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    if not ROWS:
        return
    lines = ["| case | sent | completed | lost | duplicated | seconds |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {r['case']} | {r['sent']} | {r['completed']} | {r['sent'] - r['completed']} | "
        f"{r['duplicated']} | {r['seconds']:.1f} |"
        for r in ROWS
    ]
    table = "\n".join(lines)
    print("\n" + table)
    if REPORT:
        Path(REPORT).write_text(
            REPORT_TEMPLATE.format(
                date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                machine=machine(),
                table=table,
                batch=BATCH,
                work=WORK,
                waiting=WAITING,
                outage=OUTAGE,
            )
        )


def machine() -> str:
    cpus, mem = os.cpu_count(), os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**30
    return f"{platform.system()} {platform.release()}, {cpus} cores, {mem} GiB, host {platform.node()}"


def record(case: str, host: Any, config_id: int, sent: int, started: float, timeout: float = 180) -> None:
    wait_for(lambda: completed(host, config_id)[0] >= sent, timeout=timeout, every=1)
    done, duplicated = completed(host, config_id)
    ROWS.append(
        {"case": case, "sent": sent, "completed": done, "duplicated": duplicated, "seconds": time.monotonic() - started}
    )
    assert done == sent, f"{case}: {sent - done} task(s) lost"


def new_id() -> int:
    return int(time.time() * 1000) % 1_000_000_000


def started_batch(host: Any, size: int = BATCH) -> tuple[int, float]:
    config_id, started = new_id(), time.monotonic()
    send_batch(host, config_id, size, WORK)
    # Inject the fault once the batch is well under way.
    assert wait_for(lambda: completed(host, config_id)[0] >= max(size // 5, 2), timeout=60, every=0.5)
    return config_id, started


def test_worker_restart_during_a_batch(first_host: Any) -> None:
    config_id, started = started_batch(first_host)
    run(first_host, f"systemctl restart {WORKER}")
    record("1. `systemctl restart` of the worker during the batch", first_host, config_id, BATCH, started)


def test_converge_with_a_changed_worker_setting_during_a_batch(first_host: Any) -> None:
    name = first_host.backend.get_hostname()
    changed = [{**w, "loglevel": "warning"} for w in setting(first_host, "dhis_celery_workers")]
    config_id, started = started_batch(first_host)
    try:
        result = play(name, {"dhis_celery_workers": changed})
        assert result.returncode == 0 and "Restart Celery workers" in result.stdout, result.stdout[-2000:]
        record("2. converge with a changed worker setting during the batch", first_host, config_id, BATCH, started)
    finally:
        assert play(name, {}).returncode == 0


def test_kill_9_of_the_worker_during_a_batch(first_host: Any) -> None:
    # A short visibility timeout so that Redis redelivers the killed worker's tasks quickly.
    name = first_host.backend.get_hostname()
    short = {
        "dhis_celery_visibility_timeout": 20,
        "dhis_celery_task_time_limit": 15,
        "dhis_celery_task_soft_time_limit": 10,
    }
    assert play(name, short).returncode == 0
    try:
        config_id, started = started_batch(first_host)
        pid = run(first_host, f"systemctl show -p MainPID --value {WORKER}").strip()
        run(first_host, f"kill -9 {pid}")
        record("3. `kill -9` of the worker's main process during the batch", first_host, config_id, BATCH, started)
        assert run(first_host, f"systemctl is-active {WORKER}").strip() == "active"
    finally:
        assert play(name, {}).returncode == 0


def test_redis_restart_with_messages_waiting(first_host: Any) -> None:
    run(first_host, f"systemctl stop {WORKER}")
    try:
        config_id, started = new_id(), time.monotonic()
        send_batch(first_host, config_id, WAITING)
        before = queued(first_host, "sync")
        assert before >= WAITING
        run(first_host, "systemctl restart redis-server")
        assert queued(first_host, "sync") == before
    finally:
        run(first_host, f"systemctl start {WORKER}")
    record(
        f"4. `systemctl restart redis-server` with {WAITING} messages waiting", first_host, config_id, WAITING, started
    )


def test_host_restart_with_messages_waiting(first_host: Any) -> None:
    run(first_host, f"systemctl stop {WORKER}")
    config_id, started = new_id(), time.monotonic()
    send_batch(first_host, config_id, BATCH)
    name = first_host.backend.get_hostname()
    subprocess.run(["docker", "kill", "--signal", "SIGRTMIN+3", name], check=True, timeout=30)
    subprocess.run(["docker", "wait", name], check=True, timeout=120)
    subprocess.run(["docker", "start", name], check=True, timeout=60)
    assert wait_for(
        lambda: first_host.run("systemctl is-system-running --wait").stdout.strip() == "running", timeout=90
    )
    for unit in [WORKER, "celery-beat", "celery-flower", "redis-server", "redis-server@cache"]:
        assert run(first_host, f"systemctl is-enabled {unit}").strip() == "enabled"
    record(
        "5. host restart (container power-off and boot) with messages waiting", first_host, config_id, BATCH, started
    )


def test_redis_outage_while_beat_and_workers_run(first_host: Any) -> None:
    started = time.monotonic()
    run(first_host, "systemctl stop redis-server")
    time.sleep(OUTAGE)
    states = run(first_host, f"systemctl is-failed {WORKER} celery-beat celery-flower || true").split()
    run(first_host, "systemctl start redis-server")
    assert "failed" not in states, states
    config_id = new_id()
    send_batch(first_host, config_id, 20)
    record(f"6. Redis stopped {OUTAGE} s under Beat and the worker, then 20 tasks", first_host, config_id, 20, started)
    for unit in [WORKER, "celery-beat"]:
        assert run(first_host, f"systemctl is-active {unit}").strip() == "active"


def test_beat_restart_neither_loses_nor_doubles_a_period(first_host: Any) -> None:
    config_id, every, window = new_id(), 3, 30
    django(
        first_host,
        f"""
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from dhis_app.models import SyncConfig
SyncConfig.objects.create(pk={config_id}, name="beat-{config_id}")
schedule, _ = IntervalSchedule.objects.get_or_create(every={every}, period=IntervalSchedule.SECONDS)
PeriodicTask.objects.create(name="beat-restart-{config_id}", interval=schedule, kwargs='{{"config_id": {config_id}}}',
    task="dhis_app.services.auto_sync.celery_tasks.celery_trigger_auto_sync")
""",
    )
    try:
        time.sleep(window / 2)
        run(first_host, "systemctl restart celery-beat")
        time.sleep(window / 2)
    finally:
        django(
            first_host,
            f"from django_celery_beat.models import PeriodicTask\n"
            f"PeriodicTask.objects.filter(name='beat-restart-{config_id}').delete()",
        )
    gaps = [
        float(g)
        for g in django(
            first_host,
            f"""
from dhis_app.models import SyncRun
times = list(SyncRun.objects.filter(config_id={config_id}).order_by("created").values_list("created", flat=True))
print(" ".join(str((b - a).total_seconds()) for a, b in zip(times, times[1:])))
""",
        ).split()
    ]
    runs = len(gaps) + 1
    # Periods due between the first and the last run seen, against runs that happened: a lost
    # period shows as a gap of about two periods, a doubled one as a gap of about zero.
    due = round(sum(gaps) / every) + 1
    doubled = sum(1 for g in gaps if g < every / 2)
    ROWS.append(
        {
            "case": f"7. Beat restarted during a {window} s window of a {every} s periodic task (periods due)",
            "sent": due,
            "completed": runs - doubled,
            "duplicated": doubled,
            "seconds": float(window),
        }
    )
    assert min(gaps) > every / 2, f"a period ran twice: gaps {gaps}"
    assert max(gaps) < every * 2 + 5, f"a period was lost: gaps {gaps}"
    assert runs >= window // every - 2, f"only {runs} runs in {window} s: gaps {gaps}"


REPORT_TEMPLATE = """# Reliability: the fault suite's figures

Measured {date} on {machine}, against the `default` Molecule scenario's Debian 12 host
(one worker instance `default`, prefork, concurrency 2; settings: `task_acks_late`,
`task_reject_on_worker_lost`, prefetch multiplier 1, broker visibility timeout 3600 s
(20 s in case 3 only), warm shutdown within `TimeoutStopSec` = time limit + 60 s,
`KillMode=mixed`; broker persistence RDB + AOF `appendfsync everysec`).

Re-run (about 10 minutes): `make reliability`
(= `molecule converge -s default` and this suite with DHIS_FAULT_BATCH={batch} DHIS_FAULT_WORK={work}
DHIS_FAULT_WAITING={waiting} DHIS_FAULT_OUTAGE={outage}). `make test` runs the same suite with smaller
batches (100 tasks, 300 waiting messages, a 10 s outage), so a regression fails CI.

{table}

Each task records its own id once when it completes (`dhis_app.SyncRun`, unique per task id;
a second execution of the same id increments `runs`): *completed* counts distinct ids,
*duplicated* counts extra executions, *lost* = sent - completed. For Beat (7), *sent* is the
number of periods due between the first and the last run seen, *completed* the periods that ran
(a lost period shows as a double gap, a doubled one as a gap near zero).

What the figures mean:
- Restarts and deploys (1, 2) are warm shutdowns: running tasks finish, reserved ones go back
  to the queue; nothing runs twice.
- A `kill -9` (3) is not a shutdown: the tasks the dead worker held are redelivered by Redis
  after the visibility timeout (3600 s in production, so they wait up to an hour; lower it only
  if no task runs longer). A task that had finished but was not yet acknowledged runs again:
  delivery is at-least-once, so tasks must be idempotent (the example's tasks record per task
  id, so a second run changes nothing).
- The broker keeps its messages through a Redis restart and a host restart (4, 5): RDB + AOF
  with `appendfsync everysec` (at most about one second of writes at risk on a power cut;
  `always` closes that gap at a large write cost).
- Workers and Beat ride out a Redis outage (6): broker connection retries are unlimited, at
  start-up too, so no unit ends `failed` and both resume on their own.
- Beat restarted (7): the DatabaseScheduler keeps `last_run_at` in the database, so the
  period is neither skipped nor run twice.
"""
