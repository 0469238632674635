"""Periodic tasks declared as data (dhis_celery_periodic_tasks) become django_celery_beat rows."""

from __future__ import annotations

import json
import re
from typing import Any

from dhis_testlib import django, play, setting, wait_for

ROWS = """
import json
from django_celery_beat.models import PeriodicTask
print(json.dumps({t.name: {"task": t.task, "every": t.interval.every if t.interval else None,
    "crontab": str(t.crontab.minute) if t.crontab else None, "queue": t.queue, "enabled": t.enabled,
    "args": t.args, "kwargs": t.kwargs, "description": t.description} for t in PeriodicTask.objects.all()}))
"""


def rows(host: Any) -> dict:
    return json.loads(django(host, ROWS))


def runs(host: Any, config_id: int) -> int:
    return int(
        django(
            host, f"from dhis_app.models import SyncRun\nprint(SyncRun.objects.filter(config_id={config_id}).count())"
        )
    )


def test_declared_periodic_tasks_are_rows(host: Any) -> None:
    found = rows(host)
    for declared in setting(host, "dhis_celery_periodic_tasks"):
        row = found[declared["name"]]
        assert row["task"] == declared["task"] and row["every"] == declared["interval"]["every"]
        assert row["queue"] == declared["queue"] and row["enabled"] is True
        assert json.loads(row["args"]) == declared.get("args", [])
        assert json.loads(row["kwargs"]) == declared.get("kwargs", {})
        assert row["description"].endswith("[managed by dhis_celery]")


def test_beat_runs_the_declared_tasks(host: Any) -> None:
    for config_id in (31, 32):
        django(
            host,
            f"from dhis_app.models import SyncConfig\nSyncConfig.objects.get_or_create(pk={config_id}, "
            f"defaults={{'name': 'periodic-{config_id}'}})",
        )
        before = runs(host, config_id)
        assert wait_for(lambda cid=config_id, b=before: runs(host, cid) > b, timeout=30, every=1), config_id


def test_rows_follow_a_change_and_a_removal_and_hand_made_rows_stay(one_host: Any) -> None:
    host, name = one_host, one_host.backend.get_hostname()
    django(
        host,
        """
from django_celery_beat.models import IntervalSchedule, PeriodicTask
every, _ = IntervalSchedule.objects.get_or_create(every=3600, period="seconds")
PeriodicTask.objects.update_or_create(name="made-by-hand", defaults={"interval": every, "task": "x.y"})
""",
    )
    first, _second = setting(host, "dhis_celery_periodic_tasks")
    changed = [{**{k: v for k, v in first.items() if k != "interval"}, "crontab": {"minute": "*/5"}}]
    try:
        result = play(name, {"dhis_celery_periodic_tasks": changed, "dhis_celery_periodic_tasks_prune": True})
        assert result.returncode == 0, result.stdout[-2000:]
        found = rows(host)
        assert found["sync-config-31"]["crontab"] == "*/5" and found["sync-config-31"]["every"] is None
        assert found["sync-config-32"]["enabled"] is False
        assert found["made-by-hand"]["enabled"] is True and found["made-by-hand"]["every"] == 3600
        again = play(name, {"dhis_celery_periodic_tasks": changed, "dhis_celery_periodic_tasks_prune": True})
        assert again.returncode == 0 and re.search(r"changed=0 ", again.stdout.split("PLAY RECAP")[-1])
    finally:
        assert play(name, {}).returncode == 0
        django(
            host,
            "from django_celery_beat.models import PeriodicTask\n"
            "PeriodicTask.objects.filter(name='made-by-hand').delete()",
        )
    assert rows(host)["sync-config-32"]["enabled"] is True
