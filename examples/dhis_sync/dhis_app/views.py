import time
import uuid

from django.core.cache import cache, caches
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from dhis_app.models import SyncConfig, SyncRun
from dhis_app.services.auto_sync.tasks import celery_enabled, trigger_auto_sync


def status(request: HttpRequest) -> JsonResponse:
    """What the web process runs on: the auto-sync backend and the cache, tried for real."""
    probe = f"status:{uuid.uuid4()}"
    cache.set(probe, "ok", timeout=30)
    return JsonResponse(
        {
            "backend": "celery" if celery_enabled() else "threads",
            "cache": f"{type(caches['default']).__module__}.{type(caches['default']).__name__}",
            "cache_roundtrip": cache.get(probe) == "ok",
            "runs": SyncRun.objects.count(),
        }
    )


def health(request: HttpRequest) -> JsonResponse:
    """The guide's "tester une tâche": send celery_health_check and wait for its result."""
    if not celery_enabled():
        return JsonResponse({"backend": "threads", "status": "ok"})
    from dhis_app.services.auto_sync.celery_tasks import celery_health_check

    started = time.monotonic()
    result = celery_health_check.delay().get(timeout=float(request.GET.get("timeout", 10)))
    return JsonResponse({"backend": "celery", "seconds": time.monotonic() - started, **result})


@csrf_exempt
def trigger(request: HttpRequest, config_id: int) -> JsonResponse:
    SyncConfig.objects.get_or_create(pk=config_id, defaults={"name": f"config-{config_id}"})
    return JsonResponse(trigger_auto_sync(config_id))


def result(request: HttpRequest, task_id: str) -> JsonResponse:
    """Wait for a task sent by trigger() and return what it returned."""
    from celery.result import AsyncResult

    value = AsyncResult(task_id).get(timeout=float(request.GET.get("timeout", 10)))
    return JsonResponse({"id": task_id, "result": value})
