"""Several hosts, checked from the hosts themselves: each runs its part only, tasks run on the
host that consumes their queue, Beat runs once, Flower sees both workers, Redis wants the
password from the network, and a changed worker setting restarts one worker host at a time."""

from __future__ import annotations

import json
import re
import shlex
import time
import uuid
from typing import Any

from dhis_testlib import MITOGEN, django, http, play, redis, setting, wait_for, web

CELERY_UNITS = (
    "redis-server.service",
    "redis-server@cache.service",
    "celery-worker@sync.service",
    "celery-worker@monitor.service",
    "celery-beat.service",
    "celery-flower.service",
)
RUNS = {
    "broker": {"redis-server.service", "redis-server@cache.service"},
    "web": set(),
    "sync": {"celery-worker@sync.service"},
    "monitor": {"celery-worker@monitor.service"},
    "beat": {"celery-beat.service", "celery-flower.service"},
}


def active(host: Any, unit: str) -> bool:
    return host.run(f"systemctl is-active {unit}").stdout.strip() == "active"


def test_each_host_runs_its_part_only(cluster: dict[str, Any]) -> None:
    running = {name: {u for u in CELERY_UNITS if active(host, u)} for name, host in cluster.items()}
    assert running == RUNS
    # The broker host holds no trace of the Django project; every other host has its settings.
    assert not cluster["broker"].file("/etc/dhis-celery").exists
    for name in ("web", "sync", "monitor", "beat"):
        assert cluster[name].file("/etc/dhis-celery/environment").exists, name
        assert active(cluster[name], "dhis-sync-web.service"), name


def test_web_host_uses_celery_and_the_shared_cache(cluster: dict[str, Any]) -> None:
    status = web(cluster["web"], "/status/")
    assert status["backend"] == "celery"
    assert status["cache"] == "django_redis.cache.RedisCache" and status["cache_roundtrip"], status


def test_tasks_run_on_the_host_that_consumes_their_queue(cluster: dict[str, Any]) -> None:
    web_host = cluster["web"]
    sent = [web(web_host, f"/sync/{51 + i % 3}/", method="POST")["id"] for i in range(12)]
    workers = {web(web_host, f"/result/{task_id}/?timeout=60")["result"]["worker"] for task_id in sent}
    assert workers == {"sync@dhis-cl-sync"}, "sync tasks must run on the sync host only"
    monitored = django(
        web_host,
        """
from dhis_app.models import SyncConfig
from dhis_app.services.auto_sync.celery_tasks import celery_monitor_and_sync
SyncConfig.objects.get_or_create(pk=52, defaults={"name": "config-52"})
print(celery_monitor_and_sync.delay(52).get(timeout=60)["worker"])
""",
    )
    assert monitored.strip().splitlines()[-1] == "monitor@dhis-cl-monitor"


def test_the_sync_host_serves_its_queue_with_sixteen_threads(cluster: dict[str, Any]) -> None:
    """16 tasks waiting 1 s each like a DHIS2 call: about 1 s on 16 threads, 8 s on 2 processes."""
    stats = json.loads(cluster["sync"].check_output("dhis-celery celery inspect stats --json --timeout 5"))
    pool = stats["sync@dhis-cl-sync"]["pool"]
    assert pool["implementation"].endswith("thread:TaskPool") and pool["max-concurrency"] == 16, pool
    elapsed = django(
        cluster["web"],
        """
import time
from celery.result import ResultSet
from dhis_app.services.auto_sync.celery_tasks import celery_wait
start = time.perf_counter()
ResultSet([celery_wait.apply_async((1.0,), queue="sync") for _ in range(16)]).join(timeout=60)
print(time.perf_counter() - start)
""",
    )
    assert float(elapsed.strip().splitlines()[-1]) < 4, elapsed


def task_running(host: Any, task_id: str) -> bool:
    code = (
        "from celery import current_app as app\n"
        "print(any(t['id'] == {0!r} for ts in (app.control.inspect(timeout=3).active() or {{}}).values() for t in ts))"
    )
    return django(host, code.format(task_id)).strip() == "True"


def test_terminate_refuses_on_a_threads_pool_and_signals_nothing(cluster: dict[str, Any]) -> None:
    """On 16 threads, killing one task would kill the worker and its other tasks: ops.yml's
    terminate refuses, names the worker and its pool, and the task runs to its end."""
    task_id = str(uuid.uuid4())
    django(
        cluster["web"],
        "from dhis_app.services.auto_sync.celery_tasks import celery_wait\n"
        f"celery_wait.apply_async((15.0,), queue='sync', task_id={task_id!r})",
    )
    assert wait_for(lambda: task_running(cluster["web"], task_id), timeout=20)
    pid = cluster["sync"].run("systemctl show -p MainPID --value celery-worker@sync").stdout
    extra = {"dhis_celery_ops_action": "terminate", "dhis_celery_ops_task_id": task_id}
    result = play("dhis-cl-sync", extra, playbook="playbooks/ops.yml", env=MITOGEN)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "sync@dhis-cl-sync" in output and "thread:TaskPool" in output and "Nothing was signalled" in output
    # Nothing was signalled: the task ends by itself with its result, on the same worker process.
    result = django(
        cluster["web"], f"from celery.result import AsyncResult\nprint(AsyncResult({task_id!r}).get(timeout=60))"
    )
    assert result.strip().splitlines()[-1] == "15.0", result
    assert cluster["sync"].run("systemctl show -p MainPID --value celery-worker@sync").stdout == pid


def test_beat_sends_each_periodic_task_once(cluster: dict[str, Any]) -> None:
    """monitor-config-41 runs every 5 s: two Beats would double the rows of a window."""
    beat = cluster["beat"]
    count = """
from dhis_app.models import SyncConfig, SyncRun
SyncConfig.objects.get_or_create(pk=41, defaults={"name": "config-41"})
runs = SyncRun.objects.filter(config_id=41)
print(runs.count(), *set(runs.values_list("worker", flat=True)))
"""
    first = django(beat, count).split()
    time.sleep(31)
    second = django(beat, count).split()
    runs = int(second[0]) - int(first[0])
    assert 4 <= runs <= 8, f"{runs} runs of a 5 s periodic task in 31 s (two Beats would give about 12)"
    assert second[1:] == ["monitor@dhis-cl-monitor"], second


def test_flower_lists_both_workers_behind_auth(cluster: dict[str, Any]) -> None:
    beat = cluster["beat"]
    users = setting(beat, "dhis_celery_flower_users")
    assert http(beat, "/api/workers", port=5555)[0] == 401
    auth = f"{users[0]['name']}:{users[0]['password']}"

    def both() -> bool:
        status, body = http(beat, "/api/workers?refresh=1", auth=auth, port=5555)
        return status == 200 and {"sync@dhis-cl-sync", "monitor@dhis-cl-monitor"} <= set(json.loads(body))

    assert wait_for(both, timeout=60, every=3), http(beat, "/api/workers?refresh=1", auth=auth, port=5555)
    # Flower listens on loopback only: the other hosts cannot reach it.
    assert cluster["sync"].run("curl -s --max-time 5 -o /dev/null http://dhis-cl-beat:5555/").rc != 0


def test_redis_wants_the_password_from_the_network(cluster: dict[str, Any]) -> None:
    sync = cluster["sync"]
    user, password = setting(sync, "dhis_celery_redis_user"), setting(sync, "dhis_celery_redis_password")
    for port in (6379, 6380):
        anonymous = sync.run(f"redis-cli -h dhis-cl-broker -p {port} PING")
        assert "NOAUTH" in anonymous.stdout + anonymous.stderr, (port, anonymous.stdout, anonymous.stderr)
        wrong = redis(sync, port, "-h", "dhis-cl-broker", "PING", user=user, password="not-the-password")
        assert "PONG" not in wrong
        assert redis(sync, port, "-h", "dhis-cl-broker", "PING", user=user, password=password) == "PONG"


def monotonic(host: Any, unit: str) -> tuple[int, int]:
    """(last stop began, last start ended) on the kernel's monotonic clock, shared by the containers."""
    out = host.run(
        f"systemctl show -p InactiveEnterTimestampMonotonic -p ActiveEnterTimestampMonotonic {shlex.quote(unit)}"
    ).stdout
    values = dict(line.split("=", 1) for line in out.split())
    return int(values["InactiveEnterTimestampMonotonic"]), int(values["ActiveEnterTimestampMonotonic"])


def test_a_rollout_stops_at_a_crashing_host_resumes_once_fixed_and_restarts_one_host_at_a_time(
    cluster: dict[str, Any],
) -> None:
    """1. Both worker hosts get a release whose task module raises at import, and a worker
    setting changes on both: every host gets the new files at once, the first worker host of the
    rolling play restarts and fails its health gate, naming its unit and the error, and the other
    worker host is never restarted. 2. The release is fixed and the same run repeated: nothing
    changes on disk any more, yet the other host restarts now (the restart noted on it in the
    failed run was kept there) and the shared database is migrated from the Beat host only.
    3. Back to the scenario's settings: both worker hosts restart, one after the other."""
    tasks = "/srv/dhis_sync/dhis_app/services/auto_sync/celery_tasks.py"
    units = {"sync": "celery-worker@sync.service", "monitor": "celery-worker@monitor.service"}
    setting = {"dhis_celery_settings": {"worker_max_tasks_per_child": 400}}
    before = {name: monotonic(cluster[name], unit) for name, unit in units.items()}
    for name in units:
        cluster[name].run(
            f"cp {tasks} /root/celery_tasks.good && echo 'raise RuntimeError(\"bad release 7\")' >> {tasks}"
        )
    try:
        result = play("", {**setting, "dhis_celery_health_timeout": 20}, env=MITOGEN)
        output = result.stdout + result.stderr
        assert result.returncode != 0, output[-3000:]
        failed = re.search(r"celery-worker@(sync|monitor)\.service: .*RuntimeError: bad release 7", output)
        assert failed, output[-3000:]
        other = "monitor" if failed.group(1) == "sync" else "sync"
        after = monotonic(cluster[other], units[other])
        assert after == before[other], f"the rollout went on to {other}: {before} -> {after}\n{output[-6000:]}"
        assert cluster[other].file(f"/etc/dhis-celery/restarts/{units[other]}").exists
    finally:
        for name in units:
            cluster[name].run(f"cp /root/celery_tasks.good {tasks}")
    resumed = play("", setting, env=MITOGEN)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    assert monotonic(cluster[other], units[other])[1] > before[other][1], f"{other} kept running the old settings"
    assert not cluster[other].file(f"/etc/dhis-celery/restarts/{units[other]}").exists
    # The shared database is migrated once per cluster, from the Beat host: every play of
    # site.yml lists the task; only the Beat host's play may run it.
    migrate = re.findall(r"TASK \[dhis_celery : Migrations \| .*?\n\n", resumed.stdout, re.S)
    assert migrate, "no migration task in the output"
    assert re.findall(r"^(?:ok|changed): \[([^\]]+)\]", "".join(migrate), re.M) == ["dhis-cl-beat"], migrate
    start = {name: monotonic(cluster[name], unit) for name, unit in units.items()}
    restored = play("", {}, env=MITOGEN)
    assert restored.returncode == 0, (restored.stdout + restored.stderr)[-3000:]
    end = {name: monotonic(cluster[name], unit) for name, unit in units.items()}
    for name in units:
        assert end[name][0] > start[name][1], f"the {name} worker was not restarted"
    first, second = sorted(end.values())
    assert first[1] < second[0], f"both worker hosts were down at once: {end}"


def test_a_failed_task_is_in_the_admins_task_results(cluster: dict[str, Any]) -> None:
    """The guide sends ops to the Django admin's "Task Results" for failed tasks: with django-db
    results (this scenario), the failure is a row of that table, whose admin is registered."""
    out = django(
        cluster["web"],
        """
from django.contrib import admin
from django_celery_results.models import TaskResult
from dhis_app.services.auto_sync.celery_tasks import celery_monitor_and_sync
result = celery_monitor_and_sync.apply_async(("not-a-number",), queue="monitor")
try:
    result.get(timeout=60)
except Exception as error:
    print("raised", type(error).__name__)
row = TaskResult.objects.get(task_id=result.id)
print(TaskResult in admin.site._registry, row.status, "not-a-number" in (row.traceback or "") + row.result)
""",
    )
    assert out.strip().splitlines()[-1] == "True FAILURE True", out
