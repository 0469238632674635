"""The guide's five Celery tasks. Each is idempotent: running one twice records one run."""

import os
import socket
import time
from datetime import timedelta

from celery import shared_task
from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from dhis_app.models import SyncConfig, SyncRun

from .sync import run_sync


def _queue(task) -> str:
    return (task.request.delivery_info or {}).get("routing_key") or ""


@shared_task(bind=True)
def celery_trigger_auto_sync(self, config_id: int | None = None, work_seconds: float = 0.0) -> dict:
    if work_seconds:
        time.sleep(work_seconds)  # stands for the HTTP round trips to a DHIS2 server
    return run_sync(config_id, self.request.id, "celery", self.request.hostname or "", _queue(self))


@shared_task(bind=True)
def celery_monitor_and_sync(self, config_id: int) -> dict:
    config = SyncConfig.objects.filter(pk=config_id, enabled=True).first()
    if config is None:
        return {"config": config_id, "synced": False}
    return run_sync(config.pk, self.request.id, "celery", self.request.hostname or "", _queue(self))


@shared_task
def celery_monitor_all_configs() -> list[int]:
    ids = list(SyncConfig.objects.filter(enabled=True).values_list("pk", flat=True))
    for config_id in ids:
        celery_monitor_and_sync.delay(config_id)
    return ids


@shared_task
def celery_cleanup_dead_tasks(max_age_days: int = 30) -> int:
    deleted, _ = SyncRun.objects.filter(created__lt=timezone.now() - timedelta(days=max_age_days)).delete()
    return deleted


@shared_task(bind=True)
def celery_health_check(self) -> dict:
    probe = f"health:{self.request.id}"
    cache.set(probe, "ok", timeout=60)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {
        "status": "ok" if cache.get(probe) == "ok" else "cache-failed",
        "worker": self.request.hostname,
        "host": socket.gethostname(),
        "cache": type(cache).__module__,
    }


@shared_task
def celery_wait(seconds: float = 0.0) -> float:
    """The benchmark's task (make bench): no work at all, or a wait standing for a DHIS2 HTTP call."""
    if seconds:
        time.sleep(seconds)
    return seconds


_LEAKED: list[bytes] = []


@shared_task
def celery_leak(megabytes: int) -> int:
    """The memory test's task: leaks like a cache that never shrinks, keeping `megabytes` of
    written (resident) memory in its pool child for good. Returns the child's process id."""
    _LEAKED.append(b"\x01" * (megabytes * 2**20))
    return os.getpid()
