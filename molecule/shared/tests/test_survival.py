"""Broker and cache apart (issue: one memory policy cannot serve both), and what survives.

These tests change the host (they stop workers, fill the cache, restart the container, switch
the Redis layout) and put it back; they run after the read-only stack tests, on the first
platform only.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from dhis_testlib import admin_redis, app_redis, completed, django, play, queued, run, send_batch, setting, wait_for

BROKER, CACHE = 6379, 6380


@pytest.fixture
def stopped_worker(one_host: Any) -> Iterator[Any]:
    run(one_host, "systemctl stop celery-worker@default")
    try:
        yield one_host
    finally:
        run(one_host, "systemctl start celery-worker@default")


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


def test_transactions_in_the_append_only_file_survive_a_broker_restart(one_host: Any) -> None:
    """kombu writes its unacknowledged-message index, its acks and its restores in MULTI/EXEC
    blocks. Redis replays them from the AOF as the default user and re-checks ACLs at EXEC: with a
    default user stripped of permissions it dropped every one on a restart (NOPERM in the log)."""
    host, tag = one_host, f"tx-{time.time_ns()}"
    user, password = setting(host, "dhis_celery_redis_user"), setting(host, "dhis_celery_redis_password")
    block = f"MULTI\nZADD {tag}:index 1 {tag}\nHSET {tag}:unacked {tag} message\nEXEC\n"
    replies = run(
        host,
        f"printf {shlex.quote(block)} | REDISCLI_AUTH={shlex.quote(password)} "
        f"redis-cli --no-auth-warning --user {shlex.quote(user)} -p {BROKER}",
    )
    assert replies.split()[-2:] == ["1", "1"], replies
    since = run(host, "date +%s").strip()
    run(host, "systemctl restart redis-server")
    try:
        # Redis answers LOADING until it has replayed the file.
        assert wait_for(lambda: app_redis(host, BROKER, "HGET", f"{tag}:unacked", tag) == "message", timeout=15)
        assert app_redis(host, BROKER, "ZSCORE", f"{tag}:index", tag) == "1"
        assert "NOPERM" not in run(host, f"journalctl -u redis-server --since @{since} -o cat")
    finally:
        app_redis(host, BROKER, "DEL", f"{tag}:index", f"{tag}:unacked")


def test_moving_from_one_instance_to_two_and_turning_aof_on_keeps_the_data(stopped_worker: Any) -> None:
    host = stopped_worker
    name = host.backend.get_hostname()
    single = play(name, {"dhis_celery_redis_cache_separate": False, "dhis_celery_redis_appendonly": False})
    assert single.returncode == 0, single.stdout[-3000:]
    assert not host.service("redis-server@cache").is_running
    assert "aof_enabled:0" in admin_redis(host, BROKER, "INFO", "persistence")
    run(host, "systemctl stop celery-worker@default")
    send_batch(host, 9003, 20)
    # The AOF left from before is stale: a restart that loaded it, and not the data set in
    # memory, would lose the key and the messages written since.
    assert app_redis(host, BROKER, "SET", "aof-probe", "kept") == "OK"
    before = time.monotonic()
    both = play(name, {})
    assert both.returncode == 0, both.stdout[-3000:]
    assert host.service("redis-server@cache").is_running
    persistence = admin_redis(host, BROKER, "INFO", "persistence")
    assert "aof_enabled:1" in persistence
    uptime = int(admin_redis(host, BROKER, "INFO", "server").split("uptime_in_seconds:")[1].split()[0])
    assert uptime <= time.monotonic() - before, "the broker was not restarted on its new configuration"
    assert app_redis(host, BROKER, "GETDEL", "aof-probe") == "kept"
    run(host, "systemctl start celery-worker@default")
    assert wait_for(lambda: completed(host, 9003)[0] == 20, timeout=60)


def unit_times(host: Any, unit: str) -> dict[str, int]:
    props = "ActiveEnterTimestampMonotonic", "ActiveExitTimestampMonotonic", "MainPID"
    out = run(host, f"systemctl show {' '.join('-p ' + p for p in props)} {unit}")
    return {k: int(v) for k, v in (line.split("=", 1) for line in out.split())}


def test_instances_restart_one_at_a_time_and_an_undeclared_one_stops(one_host: Any) -> None:
    host = one_host
    name = host.backend.get_hostname()
    two = [*setting(host, "dhis_celery_workers"), {"name": "spare", "queues": ["spare"], "concurrency": 1}]
    units = [f"celery-worker@{w['name']}" for w in two]
    try:
        added = play(name, {"dhis_celery_workers": two})
        assert added.returncode == 0, added.stdout[-3000:]
        assert host.service("celery-worker@spare").is_running
        start = int(run(host, "python3 -c 'import time; print(int(time.monotonic() * 1e6))'"))
        quiet = play(name, {"dhis_celery_workers": [{**w, "loglevel": "warning"} for w in two]})
        assert quiet.returncode == 0, quiet.stdout[-3000:]
        first, second = sorted((unit_times(host, u) for u in units), key=lambda t: t["ActiveExitTimestampMonotonic"])
        assert first["ActiveExitTimestampMonotonic"] > start, "both instances restart on a changed setting"
        # The second instance began to stop only once the first was running again.
        assert second["ActiveExitTimestampMonotonic"] > first["ActiveEnterTimestampMonotonic"], (first, second)
    finally:
        restored = play(name, {})
        assert restored.returncode == 0, restored.stdout[-3000:]
    assert run(host, "systemctl is-active celery-worker@spare || true").strip() == "inactive"
    assert run(host, "systemctl is-enabled celery-worker@spare || true").strip() != "enabled"
    assert not host.file("/etc/dhis-celery/worker-spare.env").exists
    assert host.service("celery-worker@default").is_running
