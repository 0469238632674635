"""Entry point the views use: Celery when the settings configure a broker, threads otherwise.

The guide asks to uncomment the Celery section; here the choice follows the settings, so the
switch made by the dhis_celery role (and its rollback) is visible from the web side.
"""

from django.conf import settings


def celery_enabled() -> bool:
    return bool(getattr(settings, "CELERY_BROKER_URL", None))


def trigger_auto_sync(config_id: int) -> dict:
    if celery_enabled():
        from .celery_tasks import celery_trigger_auto_sync

        return {"backend": "celery", "id": celery_trigger_auto_sync.delay(config_id).id}
    from .threads import trigger_auto_sync_async

    return {"backend": "threads", "id": trigger_auto_sync_async(config_id)}
