"""Queue lengths for Prometheus: the broker host's counter, read back through node_exporter.

A queue is filled while its worker is stopped, some messages with a priority (kombu puts them
in lists of their own, which exporters reading only QUEUE miss); the metric node_exporter serves
must count them all, and fall back to 0 once the worker drained the queue.
"""

from __future__ import annotations

import re
from typing import Any

from dhis_testlib import django, redis, run, setting, wait_for

UNIT = "celery-queue-metrics"
TEXTFILE = "/var/lib/prometheus/node-exporter/celery-queues.prom"


def count(host: Any) -> None:
    """Run the counter now. Tests start it more often than systemd's start limit allows (5 in
    10 s), which would refuse the start and leave the textfile as it was: reset the limit first."""
    host.run(f"systemctl reset-failed {UNIT}.service; systemctl start {UNIT}.service")


def scraped(host: Any, queue: str) -> int | None:
    """The queue's length as node_exporter serves it (after a fresh count), or None if absent.
    A count fails (and the unit with it) while Redis is down or still loading its files."""
    count(host)
    body = run(host, "curl -sf http://127.0.0.1:9100/metrics")
    found = re.search(rf'^dhis_celery_queue_length{{app="celery",queue="{queue}"}} (\d+)$', body, re.M)
    return int(found.group(1)) if found else None


def test_a_filled_queue_shows_in_node_exporter_priorities_included(one_host: Any) -> None:
    assert run(one_host, f"systemctl is-active {UNIT}.timer").strip() == "active"
    run(one_host, "systemctl stop celery-worker@default")
    try:
        django(
            one_host,
            "from dhis_app.services.auto_sync.celery_tasks import celery_trigger_auto_sync as sync\n"
            "for p in (None, None, 9, 9, 6): sync.apply_async(kwargs={'config_id': 9201}, queue='sync', priority=p)",
        )
        assert scraped(one_host, "sync") == 5
        assert 'dhis_celery_queue_metrics_up{app="celery"} 1' in run(one_host, f"cat {TEXTFILE}")
    finally:
        run(one_host, "systemctl start celery-worker@default")
    assert wait_for(lambda: scraped(one_host, "sync") == 0, timeout=60, every=2)


def test_the_textfile_holds_no_secret_and_the_counter_may_only_count(one_host: Any) -> None:
    mode = run(one_host, f"stat -c '%a %U' {TEXTFILE}").strip()
    assert mode == "644 root", mode
    text = run(one_host, f"cat {TEXTFILE}")
    password = run(one_host, f"cat /etc/dhis-celery-queue-metrics/{UNIT}.password")
    for secret in (
        password,
        setting(one_host, "dhis_celery_redis_password"),
        setting(one_host, "dhis_celery_redis_admin_password"),
    ):
        assert secret and secret not in text
    user = setting(one_host, "dhis_celery_redis_metrics_user")
    assert redis(one_host, 6379, "LLEN", "sync", user=user, password=password) == "0"
    for refused in (("LRANGE", "sync", "0", "-1"), ("GET", "x"), ("DEL", "sync"), ("CONFIG", "GET", "*")):
        assert "NOPERM" in redis(one_host, 6379, *refused, user=user, password=password), refused
    assert run(one_host, f"stat -c '%a %U' /etc/dhis-celery-queue-metrics/{UNIT}.password").strip() == "600 root"


def test_an_unreadable_broker_shows_as_down_not_as_empty(one_host: Any) -> None:
    run(one_host, "systemctl stop redis-server")
    try:
        count(one_host)
        text = run(one_host, f"cat {TEXTFILE}")
    finally:
        run(one_host, "systemctl start redis-server")
    assert 'dhis_celery_queue_metrics_up{app="celery"} 0' in text
    assert "dhis_celery_queue_length" not in text
    assert wait_for(lambda: scraped(one_host, "sync") == 0, timeout=30, every=2)
