"""The work itself: a stand-in for a DHIS2 synchronisation, light but real.

Each run is recorded under a key (the Celery task id, or a thread's uuid) with get_or_create,
so a task delivered twice (at-least-once after a lost worker) is recorded once and counted.
"""

import socket

from django.core.cache import cache
from django.db import transaction
from django.db.models import F

from dhis_app.models import SyncConfig, SyncRun


def run_sync(config_id: int | None, key: str, backend: str, worker: str = "", queue: str = "") -> dict:
    config = SyncConfig.objects.filter(pk=config_id).first() if config_id else None
    with transaction.atomic():
        run, created = SyncRun.objects.get_or_create(
            key=key,
            defaults={"config": config, "backend": backend, "worker": worker or socket.gethostname()},
        )
        if not created:
            SyncRun.objects.filter(pk=run.pk).update(runs=F("runs") + 1)
    cache.set(f"dhis_sync:last_run:{config_id}", key, timeout=3600)
    return {"run": run.pk, "key": key, "backend": backend, "worker": run.worker, "queue": queue, "first": created}
