"""Broker and cache apart (issue: one memory policy cannot serve both), and what survives.

These tests change the host (they stop workers, fill the cache, restart the container, switch
the Redis layout) and put it back; they run after the read-only stack tests, on the first
platform only.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from dhis_testlib import admin_redis, app_redis, completed, django, play, queued, run, send_batch, wait_for

BROKER, CACHE = 6379, 6380


@pytest.fixture
def stopped_worker(first_host: Any) -> Iterator[Any]:
    run(first_host, "systemctl stop celery-worker@default")
    try:
        yield first_host
    finally:
        run(first_host, "systemctl start celery-worker@default")


def test_filling_the_cache_past_its_cap_evicts_cache_keys_and_spares_the_broker(stopped_worker: Any) -> None:
    host = stopped_worker
    send_batch(host, 9001, 50)
    assert queued(host, "sync") >= 50
    bindings = app_redis(host, BROKER, "--scan", "--pattern", "_kombu.binding.*")
    cap = int(admin_redis(host, CACHE, "CONFIG", "GET", "maxmemory").split()[-1])
    evicted_before = int(admin_redis(host, CACHE, "INFO", "stats").split("evicted_keys:")[1].split()[0])
    # Write 1.5 times the cap through the Django cache, 256 KiB per key.
    keys = int(cap * 1.5) // 262144 + 1
    django(
        host,
        f"from django.core.cache import cache\nfor i in range({keys}): cache.set(f'fill:{{i}}', 'x' * 262144, 3600)",
    )
    evicted = int(admin_redis(host, CACHE, "INFO", "stats").split("evicted_keys:")[1].split()[0]) - evicted_before
    assert evicted > 0
    assert int(admin_redis(host, CACHE, "INFO", "memory").split("used_memory:")[1].split()[0]) <= cap * 1.05
    # The broker lost nothing: queued messages and kombu's bindings are there, and run.
    assert queued(host, "sync") >= 50
    assert app_redis(host, BROKER, "--scan", "--pattern", "_kombu.binding.*") == bindings
    run(host, "systemctl start celery-worker@default")
    assert wait_for(lambda: completed(host, 9001)[0] == 50, timeout=60)


def test_the_queue_and_both_instances_survive_a_host_restart(stopped_worker: Any) -> None:
    host = stopped_worker
    send_batch(host, 9002, 30)
    waiting = queued(host, "sync")
    assert waiting >= 30
    # A clean power-off (systemd's SIGRTMIN+3) and a boot: the enabled units come back by
    # themselves and the AOF + RDB files give the broker its queue back.
    name = host.backend.get_hostname()
    subprocess.run(["docker", "kill", "--signal", "SIGRTMIN+3", name], check=True, timeout=30)
    subprocess.run(["docker", "wait", name], check=True, timeout=120)
    subprocess.run(["docker", "start", name], check=True, timeout=60)
    assert wait_for(
        lambda: host.run("systemctl is-system-running --wait").stdout.strip() in {"running", "degraded"}, timeout=90
    )
    for unit in ["redis-server", "redis-server@cache", "celery-worker@default", "celery-beat", "celery-flower"]:
        assert host.service(unit).is_running, unit
    assert app_redis(host, CACHE, "PING") == "PONG"
    assert wait_for(lambda: completed(host, 9002)[0] == 30, timeout=60)


def test_moving_from_one_instance_to_two_keeps_queued_messages(stopped_worker: Any) -> None:
    host = stopped_worker
    name = host.backend.get_hostname()
    single = play(name, {"dhis_celery_redis_cache_separate": False})
    assert single.returncode == 0, single.stdout[-3000:]
    assert not host.service("redis-server@cache").is_running
    run(host, "systemctl stop celery-worker@default")
    send_batch(host, 9003, 20)
    both = play(name, {})
    assert both.returncode == 0, both.stdout[-3000:]
    assert host.service("redis-server@cache").is_running
    run(host, "systemctl start celery-worker@default")
    assert wait_for(lambda: completed(host, 9003)[0] == 20, timeout=60)
