"""Fault suite: real tasks through real faults; every task must complete, none lost.

Each task records its own id once (dhis_app.SyncRun, unique per task id; a redelivered task
increments `runs`, which counts duplicates). Sizes come from the environment: `make test` runs
the short form, without the `kill -9` case; `make reliability` the full one (every case, 500
tasks of 0.2 s, 1000 waiting messages, a 30 s Redis outage) and writes docs/RELIABILITY.md.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from dhis_testlib import completed, django, entered, play, queued, run, send_batch, setting, wait_for

BATCH = int(os.environ.get("DHIS_FAULT_BATCH", "100"))
WORK = float(os.environ.get("DHIS_FAULT_WORK", "0.2"))
WAITING = int(os.environ.get("DHIS_FAULT_WAITING", "300"))
OUTAGE = int(os.environ.get("DHIS_FAULT_OUTAGE", "10"))
REPORT = os.environ.get("DHIS_FAULT_REPORT", "")
# Cases that cost minutes for what they add run in `make reliability` only (which sets it).
LONG = os.environ.get("DHIS_FAULT_LONG", "") == "1"
ROWS: list[dict] = []
WORKER = "celery-worker@default"


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    if not ROWS:
        return
    results = {
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "parameters": {"batch": BATCH, "work": WORK, "waiting": WAITING, "outage": OUTAGE},
        "rows": ROWS,
    }
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))
    import reliability_report

    print("\n" + reliability_report.render(results))
    if REPORT:
        Path(REPORT).write_text(json.dumps(results, indent=2) + "\n")
        reliability_report.DOC.write_text(reliability_report.render(results))


def machine() -> str:
    cpus, mem = os.cpu_count(), os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**30
    return f"{platform.system()} {platform.release()}, {cpus} cores, {mem} GiB, host {platform.node()}"


def record(
    case: str,
    host: Any,
    config_id: int,
    sent: int,
    started: float,
    timeout: float = 180,
    at_least_once: bool = False,
    max_duplicated: int = 0,
) -> None:
    """Waits for the batch, records its row, and fails on a lost task or, unless the case is one
    where delivery is only at-least-once (a killed worker), on more than `max_duplicated` tasks
    that ran twice."""
    wait_for(lambda: completed(host, config_id)[0] >= sent, timeout=timeout, every=1)
    done, duplicated = completed(host, config_id)
    ROWS.append(
        {
            "case": case,
            "sent": sent,
            "completed": done,
            "duplicated": duplicated,
            "max_duplicated": max_duplicated,
            "seconds": time.monotonic() - started,
        }
    )
    assert done == sent, f"{case}: {sent - done} task(s) lost"
    assert at_least_once or duplicated <= max_duplicated, f"{case}: {duplicated} task(s) ran twice"


def in_flight(host: Any) -> int:
    """What the restarted worker holds at once, its pool times its prefetch. A warm shutdown
    finishes them, but one that succeeds as the worker stops can stay unacknowledged and run
    again (celery#3802, open, Redis broker with acks_late): that race bounds the duplicates."""
    worker = next(w for w in setting(host, "dhis_celery_workers") if w["name"] == WORKER.split("@")[1])
    return int(worker["concurrency"]) * int(setting(host, "dhis_celery_worker_prefetch_multiplier"))


def new_id() -> int:
    return int(time.time() * 1000) % 1_000_000_000


def started_batch(host: Any, size: int = BATCH) -> tuple[int, float]:
    config_id, started = new_id(), time.monotonic()
    send_batch(host, config_id, size, WORK)
    # Inject the fault once the batch is well under way.
    assert wait_for(lambda: completed(host, config_id)[0] >= max(size // 5, 2), timeout=60, every=0.5)
    return config_id, started


def test_worker_restart_during_a_batch(one_host: Any) -> None:
    config_id, started = started_batch(one_host)
    run(one_host, f"systemctl restart {WORKER}")
    record(
        "1. `systemctl restart` of the worker during the batch",
        *(one_host, config_id, BATCH, started),
        max_duplicated=in_flight(one_host),
    )


def test_converge_with_a_changed_worker_setting_during_a_batch(one_host: Any) -> None:
    name = one_host.backend.get_hostname()
    changed = [{**w, "loglevel": "warning"} for w in setting(one_host, "dhis_celery_workers")]
    config_id, started = started_batch(one_host)
    before = entered(one_host, WORKER)
    try:
        result = play(name, {"dhis_celery_workers": changed})
        assert result.returncode == 0, result.stdout[-2000:]
        assert entered(one_host, WORKER) > before, "the changed setting did not restart the worker"
        record(
            "2. converge with a changed worker setting during the batch",
            *(one_host, config_id, BATCH, started),
            max_duplicated=in_flight(one_host),
        )
    finally:
        assert play(name, {}).returncode == 0


@pytest.mark.skipif(not LONG, reason="long form (two converges and a visibility timeout): make reliability")
def test_kill_9_of_the_worker_during_a_batch(one_host: Any) -> None:
    # A short visibility timeout so that Redis redelivers the killed worker's tasks quickly.
    name = one_host.backend.get_hostname()
    short = {
        "dhis_celery_visibility_timeout": 20,
        "dhis_celery_task_time_limit": 15,
        "dhis_celery_task_soft_time_limit": 10,
    }
    assert play(name, short).returncode == 0
    try:
        config_id, started = started_batch(one_host)
        pid = run(one_host, f"systemctl show -p MainPID --value {WORKER}").strip()
        run(one_host, f"kill -9 {pid}")
        record(
            "3. `kill -9` of the worker's main process during the batch",
            *(one_host, config_id, BATCH, started),
            at_least_once=True,
        )
        assert run(one_host, f"systemctl is-active {WORKER}").strip() == "active"
    finally:
        assert play(name, {}).returncode == 0


def test_redis_restart_with_messages_waiting(one_host: Any) -> None:
    run(one_host, f"systemctl stop {WORKER}")
    try:
        config_id, started = new_id(), time.monotonic()
        send_batch(one_host, config_id, WAITING)
        before = queued(one_host, "sync")
        assert before >= WAITING
        run(one_host, "systemctl restart redis-server")
        assert queued(one_host, "sync") == before
    finally:
        run(one_host, f"systemctl start {WORKER}")
    record(
        f"4. `systemctl restart redis-server` with {WAITING} messages waiting", one_host, config_id, WAITING, started
    )


def test_host_restart_with_messages_waiting(one_host: Any) -> None:
    run(one_host, f"systemctl stop {WORKER}")
    config_id, started = new_id(), time.monotonic()
    send_batch(one_host, config_id, BATCH)
    name = one_host.backend.get_hostname()
    subprocess.run(["docker", "kill", "--signal", "SIGRTMIN+3", name], check=True, timeout=30)
    subprocess.run(["docker", "wait", name], check=True, timeout=120)
    subprocess.run(["docker", "start", name], check=True, timeout=60)
    assert wait_for(lambda: one_host.run("systemctl is-system-running --wait").stdout.strip() == "running", timeout=90)
    for unit in [WORKER, "celery-beat", "celery-flower", "redis-server", "redis-server@cache"]:
        assert run(one_host, f"systemctl is-enabled {unit}").strip() == "enabled"
    record("5. host restart (container power-off and boot) with messages waiting", one_host, config_id, BATCH, started)


def test_redis_outage_while_beat_and_workers_run(one_host: Any) -> None:
    started = time.monotonic()
    run(one_host, "systemctl stop redis-server")
    time.sleep(2)
    # A worker that starts while the broker is down waits for it (retries at start-up) instead of
    # exiting: the process systemd started is still the one running when the broker comes back.
    since = run(one_host, "date +%s").strip()
    run(one_host, f"systemctl restart {WORKER}")
    pid = run(one_host, f"systemctl show -p MainPID --value {WORKER}").strip()
    journal = f"journalctl -q -o cat -u {WORKER} --since @{since}"
    tried = wait_for(lambda: "Cannot connect to" in run(one_host, journal), timeout=30)
    time.sleep(max(OUTAGE - (time.monotonic() - started), 3))
    states = run(one_host, f"systemctl is-failed {WORKER} celery-beat celery-flower || true").split()
    pid_now = run(one_host, f"systemctl show -p MainPID --value {WORKER}").strip()
    run(one_host, "systemctl start redis-server")
    assert tried, run(one_host, journal)[-2000:]
    assert pid_now == pid != "0"
    assert "failed" not in states, states
    config_id = new_id()
    send_batch(one_host, config_id, 20)
    label = f"6. Redis stopped at least {OUTAGE} s under Beat and the worker (restarted meanwhile), then 20 tasks"
    record(label, one_host, config_id, 20, started)
    for unit in [WORKER, "celery-beat"]:
        assert run(one_host, f"systemctl is-active {unit}").strip() == "active"


def test_beat_restart_runs_an_overdue_period_once_and_none_twice(one_host: Any) -> None:
    """What Beat can promise across a restart: a period overdue when it comes back runs at once
    (within SLACK of being due, or of the restart if that is later: Beat's own start-up), none
    runs twice, and every other gap is one period. A doubled period fails, and so does one
    skipped after the restart (it would add a whole period, more than SLACK)."""
    config_id, every, window, slack = new_id(), 10, 60, 6.0
    django(
        one_host,
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
        # Type=exec: the restart returns once the new Beat process runs (the host's clock, as the rows').
        up = float(run(one_host, "systemctl restart celery-beat && date +%s.%N").strip())
        time.sleep(window / 2)
    finally:
        django(
            one_host,
            f"from django_celery_beat.models import PeriodicTask\n"
            f"PeriodicTask.objects.filter(name='beat-restart-{config_id}').delete()",
        )
    times = [
        float(t)
        for t in django(
            one_host,
            f"""
from dhis_app.models import SyncRun
times = SyncRun.objects.filter(config_id={config_id}).order_by("created").values_list("created", flat=True)
print(" ".join(str(t.timestamp()) for t in times))
""",
        ).split()
    ]
    before, after = [t for t in times if t < up], [t for t in times if t >= up]
    assert before and after, f"runs {times}, Beat up at {up}"
    late = after[0] - max(up, before[-1] + every)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    doubled = sum(1 for g in gaps if g < every / 2)
    due = round((times[-1] - times[0]) / every) + 1
    ROWS.append(
        {
            "case": f"7. Beat restarted during a {window} s window of a {every} s periodic task (periods due)",
            "sent": due,
            "completed": len(times) - doubled,
            "duplicated": doubled,
            "seconds": float(window),
            "late_seconds": round(late, 2),
            "slack_seconds": slack,
        }
    )
    assert doubled == 0, f"a period ran twice: gaps {gaps}"
    assert late < slack, f"the overdue period ran {late:.1f} s late after the restart: runs {times}, up at {up}"
    steady = [b - a for part in (before, after) for a, b in itertools.pairwise(part)]
    assert steady and max(steady) < every * 1.5, f"a period was lost outside the restart: gaps {gaps}"


def test_code_deploy_during_a_batch(one_host: Any) -> None:
    """playbooks/deploy.yml with a new release marker: every unit restarts in order, none of the
    batch's tasks is lost or cut (a cut task would run twice), and the units see the marker."""
    name = one_host.backend.get_hostname()
    refused = play(name, {}, playbook="playbooks/deploy.yml")
    assert refused.returncode != 0 and "dhis_celery_app_revision" in refused.stdout + refused.stderr
    config_id, started = started_batch(one_host)
    revision = f"release-{config_id}"
    units = (WORKER, "celery-beat", "celery-flower", "dhis-sync-web")
    before = entered(one_host, *units)
    result = play(name, {"dhis_celery_app_revision": revision}, playbook="playbooks/deploy.yml")
    assert result.returncode == 0, result.stdout[-3000:]
    after = entered(one_host, *units)
    assert all(a > b for a, b in zip(after, before, strict=True)), f"not every unit restarted: {before} -> {after}"
    assert after == sorted(after), f"the units did not restart in the order {units}: {after}"
    record(
        "8. code deploy (playbooks/deploy.yml, a new release marker) during the batch",
        *(one_host, config_id, BATCH, started),
        max_duplicated=in_flight(one_host),
    )
    for unit in (WORKER, "celery-beat", "dhis-sync-web"):
        pid = run(one_host, f"systemctl show -p MainPID --value {unit}").strip()
        assert f"DHIS_CELERY_APP_REVISION={revision}" in run(one_host, f"tr '\\0' '\\n' < /proc/{pid}/environ"), unit
    # A later run of site.yml without the variable leaves the marker, and so restarts nothing.
    again = play(name, {})
    assert again.returncode == 0 and entered(one_host, *units) == after, again.stdout[-3000:]
