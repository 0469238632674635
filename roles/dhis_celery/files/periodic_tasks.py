"""Reconcile declared periodic tasks with django_celery_beat rows (run by the dhis_celery role).

Reads JSON on stdin: {"tasks": [...], "prune": bool, "check": bool}. Rows the role manages carry
the MARK in their description; rows without it (made in the Django admin) are never touched.
Prints JSON: {"created": [...], "updated": [...], "disabled": [...]}.
"""

import json
import sys

import django

django.setup()

from django.db import transaction  # noqa: E402
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask  # noqa: E402

MARK = "[managed by dhis_celery]"
CRON_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")


def schedule(spec: dict) -> dict:
    if "interval" in spec:
        every = spec["interval"]
        obj, _ = IntervalSchedule.objects.get_or_create(every=every["every"], period=every.get("period", "seconds"))
        return {"interval": obj, "crontab": None}
    cron = spec["crontab"]
    fields = {name: str(cron.get(name, "*")) for name in CRON_FIELDS}
    obj = CrontabSchedule.objects.filter(timezone=cron.get("timezone", "UTC"), **fields).first()
    if obj is None:
        obj = CrontabSchedule.objects.create(timezone=cron.get("timezone", "UTC"), **fields)
    return {"interval": None, "crontab": obj}


def wanted(spec: dict) -> dict:
    return {
        **schedule(spec),
        "task": spec["task"],
        "args": json.dumps(spec.get("args", [])),
        "kwargs": json.dumps(spec.get("kwargs", {}), sort_keys=True),
        "queue": spec.get("queue") or None,
        "enabled": spec.get("enabled", True),
        "description": f"{spec.get('description', '')} {MARK}".strip(),
    }


def main() -> None:
    request = json.load(sys.stdin)
    result: dict[str, list[str]] = {"created": [], "updated": [], "disabled": []}
    with transaction.atomic():
        for spec in request["tasks"]:
            values = wanted(spec)
            row = PeriodicTask.objects.filter(name=spec["name"]).first()
            if row is None:
                result["created"].append(spec["name"])
                if not request["check"]:
                    PeriodicTask.objects.create(name=spec["name"], **values)
                continue
            differs = [k for k, v in values.items() if getattr(row, k) != v]
            if differs:
                result["updated"].append(spec["name"])
                for key in differs:
                    setattr(row, key, values[key])
                if not request["check"]:
                    row.save()
        if request["prune"]:
            declared = {spec["name"] for spec in request["tasks"]}
            stale = PeriodicTask.objects.filter(description__endswith=MARK, enabled=True).exclude(name__in=declared)
            result["disabled"] = sorted(stale.values_list("name", flat=True))
            if not request["check"]:
                for row in stale:
                    row.enabled = False
                    row.save()
        if request["check"]:
            transaction.set_rollback(True)
    print(json.dumps(result))


main()
