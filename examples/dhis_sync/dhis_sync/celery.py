"""The project's Celery application, as in the migration guide."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dhis_sync.settings")

app = Celery("dhis_sync")
app.config_from_object("django.conf:settings", namespace="CELERY")
# The tasks live in dhis_app/services/auto_sync/celery_tasks.py, as in the guide.
app.autodiscover_tasks(lambda: ["dhis_app.services.auto_sync"], related_name="celery_tasks")
