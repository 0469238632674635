"""What a user gets on a host converged with the dhis_celery role (stack present)."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Any

import pytest
from dhis_testlib import ROOT, admin_redis, app_redis, django, http, redis, run, setting, wait_for, web

BROKER, CACHE = 6379, 6380
UNITS = [
    "redis-server",
    "redis-server@cache",
    "celery-worker@default",
    "celery-beat",
    "celery-flower",
    "celery.target",
    "dhis-sync-web",
]


# --- Redis ---------------------------------------------------------------------------------


@pytest.mark.parametrize("port", [BROKER, CACHE])
def test_redis_refuses_clients_without_credentials(host: Any, port: int) -> None:
    assert "NOAUTH" in redis(host, port, "PING")
    # The default user keeps permissions (for the AOF's replay), never a way in.
    for password in ("", "default", "nopass"):
        assert "WRONGPASS" in redis(host, port, "AUTH", "default", password), password


@pytest.mark.parametrize("port", [BROKER, CACHE])
def test_redis_answers_the_application_user(host: Any, port: int) -> None:
    assert app_redis(host, port, "PING") == "PONG"


@pytest.mark.parametrize("command", [["CONFIG", "GET", "*"], ["FLUSHALL"], ["SHUTDOWN"], ["ACL", "LIST"]])
def test_redis_refuses_admin_commands_to_the_application_user(host: Any, command: list[str]) -> None:
    assert "NOPERM" in app_redis(host, BROKER, *command)


@pytest.mark.parametrize("port", [BROKER, CACHE])
def test_redis_listens_on_loopback_only(host: Any, port: int) -> None:
    listeners = run(host, f"ss -Hltn 'sport = :{port}'")
    addresses = {line.split()[3].rsplit(":", 1)[0] for line in listeners.splitlines()}
    assert addresses and addresses <= {"127.0.0.1", "[::1]"}, addresses


def test_broker_never_evicts_and_cache_evicts_under_a_cap(host: Any) -> None:
    assert admin_redis(host, BROKER, "CONFIG", "GET", "maxmemory-policy").split()[-1] == "noeviction"
    assert admin_redis(host, CACHE, "CONFIG", "GET", "maxmemory-policy").split()[-1] == "allkeys-lru"
    assert int(admin_redis(host, CACHE, "CONFIG", "GET", "maxmemory").split()[-1]) > 0


def config(host: Any, port: int, name: str) -> str:
    """One CONFIG GET value, '' when empty (redis-cli prints the name, then the value if any)."""
    lines = admin_redis(host, port, "CONFIG", "GET", name).splitlines()
    assert lines and lines[0] == name, lines
    return lines[1] if len(lines) > 1 else ""


def test_broker_persists_with_aof_and_rdb_and_the_cache_writes_nothing(host: Any) -> None:
    assert config(host, BROKER, "appendonly") == "yes"
    assert config(host, BROKER, "appendfsync") == setting(host, "dhis_celery_redis_appendfsync")
    assert config(host, BROKER, "save").split() == " ".join(setting(host, "dhis_celery_redis_save")).split()
    assert (config(host, CACHE, "appendonly"), config(host, CACHE, "save")) == ("no", "")


@pytest.mark.parametrize("port", [BROKER, CACHE])
def test_protected_mode_is_on(host: Any, port: int) -> None:
    assert config(host, port, "protected-mode") == "yes"


def test_redis_configs_hold_password_hashes_only(host: Any) -> None:
    passwords = [setting(host, "dhis_celery_redis_password"), setting(host, "dhis_celery_redis_admin_password")]
    for path in ("/etc/redis/redis.conf", "/etc/redis/redis-cache.conf"):
        text = host.file(path).content_string
        for password in passwords:
            assert password not in text, path
            assert f"#{hashlib.sha256(password.encode()).hexdigest()}" in text, path
        assert not re.search(r"^\s*(requirepass|masterauth)\b|^user .* >", text, re.M), path


# --- Units ---------------------------------------------------------------------------------


@pytest.mark.parametrize("unit", UNITS)
def test_unit_is_enabled_and_active(host: Any, unit: str) -> None:
    service = host.service(unit)
    assert service.is_enabled
    assert service.is_running or run(host, f"systemctl is-active {unit}").strip() == "active"


@pytest.mark.parametrize("unit", ["celery-worker@default", "celery-beat", "celery-flower"])
def test_unit_runs_in_the_foreground_without_pid_file(host: Any, unit: str) -> None:
    show = run(host, f"systemctl show {unit} -p Type -p PIDFile -p KillMode -p User")
    assert "Type=exec" in show and "PIDFile=\n" in show + "\n"
    assert f"User={setting(host, 'dhis_celery_user')}" in show


REPORTED = json.loads((ROOT / "docs/security-report.json").read_text())["units"]


@pytest.mark.parametrize("unit", [u["unit"] for u in REPORTED["role"] + REPORTED["debian"]])
def test_unit_exposure_score_is_at_most_the_reported_one(host: Any, unit: str) -> None:
    """docs/SECURITY.md's figures (make security-report) hold on every converged host."""
    reported = next(u["score"] for u in REPORTED["role"] + REPORTED["debian"] if u["unit"] == unit)
    out = run(host, f"systemd-analyze security --no-pager {unit}")
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out).group(1))
    assert score <= reported, out


def test_worker_stop_leaves_time_for_a_warm_shutdown(host: Any) -> None:
    show = run(host, "systemctl show celery-worker@default -p KillMode -p TimeoutStopUSec")
    assert "KillMode=mixed" in show
    assert "TimeoutStopUSec=31min" in show


# --- Celery --------------------------------------------------------------------------------


def workers(host: Any) -> list[dict]:
    return setting(host, "dhis_celery_workers")


def test_every_worker_instance_answers_ping(host: Any) -> None:
    replies = run(host, "dhis-celery celery inspect ping --json --timeout 5")
    names = {name.split("@")[0] for reply in [json.loads(replies)] for name in reply}
    assert names == {w["name"] for w in workers(host)}


def test_workers_consume_the_configured_queues(host: Any) -> None:
    replies = json.loads(run(host, "dhis-celery celery inspect active_queues --json --timeout 5"))
    consumed = {name.split("@")[0]: {q["name"] for q in queues} for name, queues in replies.items()}
    assert consumed == {w["name"]: set(w["queues"]) for w in workers(host)}


def test_health_check_sent_from_django_returns(host: Any) -> None:
    reply = web(host, "/health/")
    assert reply["backend"] == "celery" and reply["status"] == "ok", reply
    assert reply["cache"].startswith("django"), reply


def test_task_routed_to_sync_runs_on_a_worker_consuming_sync(host: Any) -> None:
    sent = web(host, "/sync/7/", method="POST")
    assert sent["backend"] == "celery"
    result = web(host, f"/result/{sent['id']}/")["result"]
    assert result["queue"] == "sync"
    consuming = {w["name"] for w in workers(host) if "sync" in w["queues"]}
    assert result["worker"].split("@")[0] in consuming, result


def test_beat_runs_a_periodic_task_defined_in_the_database(host: Any) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    django(
        host,
        f"""
from django_celery_beat.models import IntervalSchedule, PeriodicTask
every, _ = IntervalSchedule.objects.get_or_create(every=2, period=IntervalSchedule.SECONDS)
PeriodicTask.objects.create(name={name!r}, interval=every, kwargs='{{"config_id": 4242}}',
    task="dhis_app.services.auto_sync.celery_tasks.celery_trigger_auto_sync")
""",
    )
    count = "from dhis_app.models import SyncRun; print(SyncRun.objects.filter(config_id=4242).count())"
    before = int(
        django(
            host,
            "from dhis_app.models import SyncConfig\n"
            "SyncConfig.objects.get_or_create(pk=4242, defaults={'name': 'beat'})\n" + count,
        )
    )
    try:
        assert wait_for(lambda: int(django(host, count)) >= before + 2, timeout=60, every=2)
    finally:
        django(
            host,
            f"from django_celery_beat.models import PeriodicTask; PeriodicTask.objects.filter(name={name!r}).delete()",
        )


# --- Django --------------------------------------------------------------------------------


@pytest.mark.parametrize("app", ["django_celery_beat", "django_celery_results"])
def test_migrations_of_the_celery_apps_are_applied(host: Any, app: str) -> None:
    out = run(host, f"dhis-celery manage showmigrations {app}")
    assert "[X]" in out and "[ ]" not in out, out


def test_web_uses_celery_and_the_redis_cache(host: Any) -> None:
    status = web(host, "/status/")
    assert status["backend"] == "celery"
    assert status["cache"] == "django_redis.cache.RedisCache"
    assert status["cache_roundtrip"] is True


def test_cache_entries_land_in_the_cache_instance(host: Any) -> None:
    web(host, "/status/")
    assert app_redis(host, CACHE, "--scan", "--pattern", "*status:*")
    assert not app_redis(host, BROKER, "--scan", "--pattern", "*status:*")


# --- Flower --------------------------------------------------------------------------------


def test_flower_refuses_without_credentials(host: Any) -> None:
    assert http(host, "/", port=5555)[0] == 401


def test_flower_answers_with_credentials(host: Any) -> None:
    user = setting(host, "dhis_celery_flower_users")[0]
    expected = {w["name"] for w in workers(host)}
    seen: list[tuple[int, set[str]]] = []

    def listed() -> bool:
        # refresh=1 asks the workers with a short broadcast timeout: a busy worker can miss one round.
        status, body = http(host, "/api/workers?refresh=1", auth=f"{user['name']}:{user['password']}", port=5555)
        seen.append((status, {name.split("@")[0] for name in json.loads(body)} if status == 200 else set()))
        return seen[-1] == (200, expected)

    assert wait_for(listed, timeout=20, every=2), seen


def test_flower_listens_on_loopback_only(host: Any) -> None:
    listeners = run(host, "ss -Hltn 'sport = :5555'")
    assert {line.split()[3] for line in listeners.splitlines()} == {"127.0.0.1:5555"}
    address = run(host, "hostname -I").split()[0]
    assert host.run(f"curl -s --max-time 3 http://{address}:5555/").rc != 0


# --- Secrets -------------------------------------------------------------------------------


def secrets(host: Any) -> list[str]:
    values = [setting(host, "dhis_celery_redis_password"), setting(host, "dhis_celery_redis_admin_password")]
    return values + [u["password"] for u in setting(host, "dhis_celery_flower_users")]


def test_no_process_shows_a_secret_on_its_command_line(host: Any) -> None:
    commands = run(host, "ps -eo args")
    assert "celery" in commands
    for secret in secrets(host):
        assert secret not in commands


@pytest.mark.parametrize(
    "path",
    [
        "/etc/dhis-celery/python/dhis_celery_secrets.py",
        "/etc/dhis-celery/flowerconfig.py",
        "/etc/redis/redis.conf",
        "/etc/redis/redis-cache.conf",
    ],
)
def test_secret_bearing_file_is_not_world_readable(host: Any, path: str) -> None:
    f = host.file(path)
    assert f.mode & 0o007 == 0, oct(f.mode)
    assert f.user in {"root", "redis"}
