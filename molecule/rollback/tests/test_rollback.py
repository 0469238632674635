"""A host rolled back with playbooks/rollback.yml: threads again, nothing lost."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
from dhis_testlib import admin_redis, http, play, project_sql, run, wait_for, web

ROLLBACK = "playbooks/rollback.yml"
CELERY_UNITS = ["celery-worker@default", "celery-beat", "celery-flower", "celery.target"]


@pytest.mark.parametrize("unit", CELERY_UNITS)
def test_celery_unit_is_stopped_and_disabled(host: Any, unit: str) -> None:
    assert host.run(f"systemctl is-active {unit}").stdout.strip() != "active"
    assert host.run(f"systemctl is-enabled {unit}").stdout.strip() in {"", "disabled", "not-found"}


def test_no_celery_process_runs(host: Any) -> None:
    assert "celery" not in run(host, "ps -eo args")


def test_web_is_back_on_threads_and_the_local_memory_cache(host: Any) -> None:
    status = web(host, "/status/")
    assert status["backend"] == "threads"
    assert status["cache"] == "django.core.cache.backends.locmem.LocMemCache"
    assert status["cache_roundtrip"] is True


def test_a_sync_triggered_from_the_web_runs_in_a_thread(host: Any) -> None:
    sent = web(host, "/sync/5/", method="POST")
    assert sent["backend"] == "threads" and sent["id"].startswith("thread-")
    sql = f"SELECT count(*) FROM dhis_app_syncrun WHERE key = '{sent['id']}' AND backend = 'threads'"
    assert wait_for(lambda: project_sql(host, sql) == "1", timeout=15)


def test_web_unit_no_longer_selects_the_role_settings(host: Any) -> None:
    assert "dhis-celery" not in run(host, "systemctl show dhis-sync-web.service -p EnvironmentFiles -p DropInPaths")


def test_periodic_tasks_are_kept(host: Any) -> None:
    sql = "SELECT count(*) FROM django_celery_beat_periodictask WHERE name = 'rollback-keeps-me'"
    assert project_sql(host, sql) == "1"


def test_task_results_are_kept(host: Any) -> None:
    assert int(project_sql(host, "SELECT count(*) FROM django_celery_results_taskresult")) >= 3


def test_redis_stays_installed_and_running(host: Any) -> None:
    assert host.service("redis-server").is_running
    assert admin_redis(host, 6379, "PING") == "PONG"


@pytest.mark.parametrize(
    "path",
    [
        "/etc/dhis-celery",
        "/usr/local/bin/dhis-celery",
        "/etc/systemd/system/celery-worker@.service",
        # The worker's memory fence (molecule.yml gives it one).
        "/etc/systemd/system/celery-worker@default.service.d",
        "/etc/systemd/system/dhis-sync-web.service.d/dhis-celery.conf",
    ],
)
def test_role_files_are_gone(host: Any, path: str) -> None:
    assert not host.file(path).exists


def test_flower_no_longer_answers(host: Any) -> None:
    assert http(host, "/", port=5555)[0] == 0


def test_a_rollback_whose_web_unit_does_not_come_back_fails_naming_it(host: Any) -> None:
    # The role's drop-in planted again gives the rollback a restart to do; a second drop-in makes
    # the web unit exit at once, as a project whose own settings no longer load would.
    web_dir = "/etc/systemd/system/dhis-sync-web.service.d"
    broken = f"{web_dir}/zz-test-broken.conf"
    exits = "echo Error: the web side does not load >&2; exit 3"
    run(host, f"printf '[Service]\\n' > {web_dir}/dhis-celery.conf")
    run(
        host,
        f"printf '[Service]\\nExecStart=\\nExecStart=/bin/sh -c %s\\n' {shlex.quote(shlex.quote(exits))} > {broken}",
    )
    run(host, "systemctl daemon-reload")
    try:
        result = play(host.backend.get_hostname(), {"dhis_celery_health_timeout": 10}, playbook=ROLLBACK)
        output = result.stdout + result.stderr
        assert result.returncode != 0, output[-3000:]
        failure = r"Health gate failed on .*\(the rollback restarted the web unit .*\): dhis-sync-web\.service: "
        assert re.search(failure + r".*Error: the web side does not load", output), output[-3000:]
    finally:
        run(host, f"rm -f {broken} && systemctl daemon-reload && systemctl reset-failed dhis-sync-web.service")
        run(host, "systemctl restart dhis-sync-web.service")
    assert wait_for(lambda: http(host, "/status/")[0] == 200, timeout=30)
    assert web(host, "/status/")["backend"] == "threads"
    assert not host.file(f"{web_dir}/dhis-celery.conf").exists


def test_a_rollback_in_check_mode_names_the_web_restart_and_does_none(host: Any) -> None:
    # The role's drop-in planted again: the rollback would remove it and restart the web unit.
    dropin = "/etc/systemd/system/dhis-sync-web.service.d/dhis-celery.conf"
    run(host, f"printf '[Service]\\n' > {dropin} && systemctl daemon-reload")
    started = run(host, "systemctl show -p ActiveEnterTimestampMonotonic dhis-sync-web.service")
    try:
        result = play(host.backend.get_hostname(), {}, "--check", playbook=ROLLBACK)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-3000:]
        # The task's header, then (after profile_tasks' timestamp line) its result.
        would = r"TASK \[dhis_celery : Rollback \| The web unit would restart[^\n]*\n(?:[^\n]*\n){0,2}changed: \["
        assert re.search(would, output), output[-3000:]
        assert host.file(dropin).exists
        assert run(host, "systemctl show -p ActiveEnterTimestampMonotonic dhis-sync-web.service") == started
    finally:
        run(host, f"rm -f {dropin} && systemctl daemon-reload")
