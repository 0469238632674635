from django.db import models


class SyncConfig(models.Model):
    """A DHIS2 instance to keep in sync (only the name matters in the example)."""

    name = models.CharField(max_length=100, unique=True)
    enabled = models.BooleanField(default=True)
    interval_seconds = models.PositiveIntegerField(default=300)

    def __str__(self) -> str:
        return self.name


class SyncRun(models.Model):
    """One synchronisation, recorded once per task id so a redelivered task counts once."""

    config = models.ForeignKey(SyncConfig, null=True, on_delete=models.SET_NULL)
    key = models.CharField(max_length=100, unique=True)
    backend = models.CharField(max_length=10)
    worker = models.CharField(max_length=200, blank=True)
    runs = models.PositiveIntegerField(default=1)
    created = models.DateTimeField(auto_now_add=True)
