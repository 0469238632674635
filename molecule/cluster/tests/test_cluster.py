"""Several hosts, checked from the hosts themselves: each runs its part only, tasks run on the
host that consumes their queue, Beat runs once, Flower sees both workers, Redis wants the
password from the network, and a changed worker setting restarts one worker host at a time."""

from __future__ import annotations

import json
import re
import shlex
import time
import uuid
from typing import Any

from dhis_testlib import MITOGEN, TLS_CA, django, entered, http, play, redis, run, setting, wait_for, web

CELERY_UNITS = (
    "redis-server.service",
    "redis-server@cache.service",
    "celery-worker@sync.service",
    "celery-worker@monitor.service",
    "celery-beat.service",
    "celery-flower.service",
)
# The monitor host is the Redis group's second host: a client of the first, with no Redis of its own.
RUNS = {
    "broker": {"redis-server.service", "redis-server@cache.service"},
    "web": set(),
    "sync": {"celery-worker@sync.service"},
    "monitor": {"celery-worker@monitor.service"},
    "beat": {"celery-beat.service", "celery-flower.service"},
}


def active(host: Any, unit: str) -> bool:
    return host.run(f"systemctl is-active {unit}").stdout.strip() == "active"


def test_each_host_runs_its_part_only(cluster: dict[str, Any]) -> None:
    running = {name: {u for u in CELERY_UNITS if active(host, u)} for name, host in cluster.items()}
    assert running == RUNS
    # The broker host holds no trace of the Django project; every other host has its settings.
    assert not cluster["broker"].file("/etc/dhis-celery").exists
    for name in ("web", "sync", "monitor", "beat"):
        assert cluster[name].file("/etc/dhis-celery/environment").exists, name
        assert active(cluster[name], "dhis-sync-web.service"), name


def test_web_host_uses_celery_and_the_shared_cache(cluster: dict[str, Any]) -> None:
    status = web(cluster["web"], "/status/")
    assert status["backend"] == "celery"
    assert status["cache"] == "django_redis.cache.RedisCache" and status["cache_roundtrip"], status


def test_tasks_run_on_the_host_that_consumes_their_queue(cluster: dict[str, Any]) -> None:
    web_host = cluster["web"]
    sent = [web(web_host, f"/sync/{51 + i % 3}/", method="POST")["id"] for i in range(12)]
    workers = {web(web_host, f"/result/{task_id}/?timeout=60")["result"]["worker"] for task_id in sent}
    assert workers == {"sync@dhis-cl-sync"}, "sync tasks must run on the sync host only"
    monitored = django(
        web_host,
        """
from dhis_app.models import SyncConfig
from dhis_app.services.auto_sync.celery_tasks import celery_monitor_and_sync
SyncConfig.objects.get_or_create(pk=52, defaults={"name": "config-52"})
print(celery_monitor_and_sync.delay(52).get(timeout=60, propagate=False)["worker"])
""",
    )
    assert monitored.strip().splitlines()[-1] == "monitor@dhis-cl-monitor"


def test_the_sync_host_serves_its_queue_with_sixteen_threads(cluster: dict[str, Any]) -> None:
    """16 tasks waiting 1 s each like a DHIS2 call: about 1 s on 16 threads, 8 s on 2 processes."""
    stats = json.loads(cluster["sync"].check_output("dhis-celery celery inspect stats --json --timeout 5"))
    pool = stats["sync@dhis-cl-sync"]["pool"]
    assert pool["implementation"].endswith("thread:TaskPool") and pool["max-concurrency"] == 16, pool
    elapsed = django(
        cluster["web"],
        """
import time
from celery.result import ResultSet
from dhis_app.services.auto_sync.celery_tasks import celery_wait
start = time.perf_counter()
ResultSet([celery_wait.apply_async((1.0,), queue="sync") for _ in range(16)]).join(timeout=60)
print(time.perf_counter() - start)
""",
    )
    assert float(elapsed.strip().splitlines()[-1]) < 4, elapsed


def task_running(host: Any, task_id: str) -> bool:
    code = (
        "from celery import current_app as app\n"
        "print(any(t['id'] == {0!r} for ts in (app.control.inspect(timeout=3).active() or {{}}).values() for t in ts))"
    )
    return django(host, code.format(task_id)).strip() == "True"


def test_terminate_refuses_on_a_threads_pool_and_signals_nothing(cluster: dict[str, Any]) -> None:
    """On 16 threads, killing one task would kill the worker and its other tasks: ops.yml's
    terminate refuses, names the worker and its pool, and the task runs to its end."""
    task_id = str(uuid.uuid4())
    django(
        cluster["web"],
        "from dhis_app.services.auto_sync.celery_tasks import celery_wait\n"
        f"celery_wait.apply_async((15.0,), queue='sync', task_id={task_id!r})",
    )
    assert wait_for(lambda: task_running(cluster["web"], task_id), timeout=20)
    pid = cluster["sync"].run("systemctl show -p MainPID --value celery-worker@sync").stdout
    extra = {"dhis_celery_ops_action": "terminate", "dhis_celery_ops_task_id": task_id}
    result = play("dhis-cl-sync", extra, playbook="playbooks/ops.yml", env=MITOGEN)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "sync@dhis-cl-sync" in output and "thread:TaskPool" in output and "Nothing was signalled" in output
    # Nothing was signalled: the task ends by itself with its result, on the same worker process.
    result = django(
        cluster["web"],
        f"from celery.result import AsyncResult\nprint(AsyncResult({task_id!r}).get(timeout=60, propagate=False))",
    )
    assert result.strip().splitlines()[-1] == "15.0", result
    assert cluster["sync"].run("systemctl show -p MainPID --value celery-worker@sync").stdout == pid


def test_beat_sends_each_periodic_task_once(cluster: dict[str, Any]) -> None:
    """monitor-config-41 runs every 5 s: two Beats would double the rows of a window."""
    beat = cluster["beat"]
    count = """
from dhis_app.models import SyncConfig, SyncRun
SyncConfig.objects.get_or_create(pk=41, defaults={"name": "config-41"})
runs = SyncRun.objects.filter(config_id=41)
print(runs.count(), *set(runs.values_list("worker", flat=True)))
"""
    first = django(beat, count).split()
    time.sleep(31)
    second = django(beat, count).split()
    runs = int(second[0]) - int(first[0])
    assert 4 <= runs <= 8, f"{runs} runs of a 5 s periodic task in 31 s (two Beats would give about 12)"
    assert second[1:] == ["monitor@dhis-cl-monitor"], second


def test_flower_lists_both_workers_behind_auth(cluster: dict[str, Any]) -> None:
    beat = cluster["beat"]
    users = setting(beat, "dhis_celery_flower_users")
    assert http(beat, "/api/workers", port=5555)[0] == 401
    auth = f"{users[0]['name']}:{users[0]['password']}"

    def both() -> bool:
        status, body = http(beat, "/api/workers?refresh=1", auth=auth, port=5555)
        return status == 200 and {"sync@dhis-cl-sync", "monitor@dhis-cl-monitor"} <= set(json.loads(body))

    assert wait_for(both, timeout=60, every=3), http(beat, "/api/workers?refresh=1", auth=auth, port=5555)
    # Flower listens on loopback only: the other hosts cannot reach it.
    assert cluster["sync"].run("curl -s --max-time 5 -o /dev/null http://dhis-cl-beat:5555/").rc != 0


def test_redis_wants_the_password_from_the_network(cluster: dict[str, Any]) -> None:
    sync = cluster["sync"]
    user, password = setting(sync, "dhis_celery_redis_user"), setting(sync, "dhis_celery_redis_password")
    for port in (6379, 6380):
        anonymous = redis(sync, port, "-h", "dhis-cl-broker", "PING")
        assert "NOAUTH" in anonymous, (port, anonymous)
        wrong = redis(sync, port, "-h", "dhis-cl-broker", "PING", user=user, password="not-the-password")
        assert "PONG" not in wrong
        assert redis(sync, port, "-h", "dhis-cl-broker", "PING", user=user, password=password) == "PONG"


HANDSHAKE = (
    "import socket, ssl, sys; host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3] or None; "
    "ssl.create_default_context(cafile=ca).wrap_socket(socket.create_connection((host, port), 5), "
    "server_hostname=host).close(); print('verified')"
)


def handshake(host: Any, name: str, port: int, ca: str = TLS_CA) -> str:
    """A TLS handshake that checks the certificate against `ca` and `name` ('' ca: the system's)."""
    result = host.run(f"python3 -c {shlex.quote(HANDSHAKE)} {shlex.quote(name)} {port} {shlex.quote(ca)}")
    return result.stdout.strip() or result.stderr.strip().splitlines()[-1]


def test_redis_speaks_only_tls_and_clients_check_the_ca_and_the_name(cluster: dict[str, Any]) -> None:
    sync = cluster["sync"]
    address = sync.run("getent ahostsv4 dhis-cl-broker").stdout.split()[0]
    for port in (6379, 6380):
        plain = sync.run(f"redis-cli -h dhis-cl-broker -p {port} PING")
        assert "PONG" not in plain.stdout and "NOAUTH" not in plain.stdout, (port, plain.stdout)
        assert handshake(sync, "dhis-cl-broker", port) == "verified"
        # The certificate names what clients use, nothing else; and only the role's CA signs it.
        assert "match" in handshake(sync, address, port), address
        assert "certificate verify failed" in handshake(sync, "dhis-cl-broker", port, ca="")
    # The application's clients ask for the same checks (a bare rediss:// URL would skip them).
    checks = django(
        cluster["web"],
        "import json, ssl\nfrom django.conf import settings\n"
        "print(json.dumps([settings.CELERY_BROKER_URL.split(':')[0], settings.CELERY_BROKER_USE_SSL['ssl_cert_reqs']"
        " == ssl.CERT_REQUIRED, settings.CACHES['default']['OPTIONS']['CONNECTION_POOL_KWARGS']['ssl_ca_certs'],"
        " settings.CELERY_BROKER_USE_SSL['ssl_check_hostname']]))",
    )
    assert json.loads(checks) == ["rediss", True, TLS_CA, True]
    # So do the role's own counters: verify.yml from a worker host, the queue-metrics timer on the broker.
    verify = play("dhis-cl-sync", {}, playbook="playbooks/verify.yml")
    assert verify.returncode == 0 and "problems: none" in verify.stdout, verify.stdout[-3000:]
    assert re.search(r"messages waiting: [^\n]*\bsync=\d+", verify.stdout), verify.stdout[-3000:]
    run(cluster["broker"], "systemctl start celery-queue-metrics.service")
    textfile = run(cluster["broker"], "cat /var/lib/prometheus/node-exporter/celery-queues.prom")
    assert 'dhis_celery_queue_metrics_up{app="celery"} 1' in textfile


def test_nothing_secret_crosses_the_network_in_clear_text(cluster: dict[str, Any]) -> None:
    """A capture on the broker while the web host connects, caches a value and sends a task shows
    neither the password nor the value nor the task's argument; a control sent in clear text to
    the same port shows in it, so the capture does see what crosses in clear."""
    broker, web_host = cluster["broker"], cluster["web"]
    marker, control, config_id = (
        f"cached-{uuid.uuid4().hex}",
        f"control-{uuid.uuid4().hex}",
        987_000 + int(time.time()) % 1000,
    )
    capture = "/tmp/redis-tls.pcap"
    run_capture = f"timeout 40 tcpdump -i any -U -s 0 -w {capture} 'tcp port 6379 or tcp port 6380'"
    broker.run(f"rm -f {capture}; (setsid {run_capture} >/tmp/tcpdump.log 2>&1 &)")
    assert wait_for(lambda: "listening" in broker.run("cat /tmp/tcpdump.log").stdout, timeout=10)
    try:
        django(
            web_host,
            "from django.core.cache import cache\n"
            "from dhis_app.services.auto_sync.celery_tasks import celery_trigger_auto_sync as sync\n"
            f"cache.set('tls-probe', {marker!r}, 60)\n"
            f"sync.apply_async(kwargs={{'config_id': {config_id}}}, queue='sync').get(timeout=60, propagate=False)\n",
        )
        web_host.run(
            "python3 -c "
            + shlex.quote(
                "import socket, sys; s = socket.create_connection(('dhis-cl-broker', 6379), 5); "
                f"s.sendall(b'{control}\\r\\n'); s.close()"
            )
        )
        time.sleep(2)
    finally:
        broker.run("pkill -INT -x tcpdump")
    seen = broker.file(capture).content
    assert len(seen) > 2_000 and control.encode() in seen, "the capture must see what crosses in clear"
    for secret in (
        setting(web_host, "dhis_celery_redis_password"),
        marker,
        str(config_id),
    ):
        assert secret.encode() not in seen, secret


REDIS_UNITS = ("redis-server.service", "redis-server@cache.service")
CERTIFICATE = (
    "import calendar; from cryptography import x509; c = x509.load_pem_x509_certificate(open("
    "'/etc/dhis-celery-tls/redis.pem', 'rb').read()); "
    "print(c.serial_number, calendar.timegm(c.not_valid_after.timetuple()))"
)


def certificate(host: Any) -> tuple[int, int]:
    """The broker certificate's serial number and end of validity (epoch seconds)."""
    serial, end = run(host, f"python3 -W ignore -c {shlex.quote(CERTIFICATE)}").split()
    return int(serial), int(end)


def monotonic(host: Any, unit: str) -> tuple[int, int]:
    """(last stop began, last start ended) on the kernel's monotonic clock, shared by the containers."""
    out = host.run(
        f"systemctl show -p InactiveEnterTimestampMonotonic -p ActiveEnterTimestampMonotonic {shlex.quote(unit)}"
    ).stdout
    values = dict(line.split("=", 1) for line in out.split())
    return int(values["InactiveEnterTimestampMonotonic"]), int(values["ActiveEnterTimestampMonotonic"])


def test_a_rollout_stops_at_a_crashing_host_resumes_once_fixed_and_restarts_one_host_at_a_time(
    cluster: dict[str, Any],
) -> None:
    """1. Both worker hosts get a release whose task module raises at import, and a worker
    setting changes on both: every host gets the new files at once, the first worker host of the
    rolling play restarts and fails its health gate, naming its unit and the error, and the other
    worker host is never restarted. 2. The release is fixed and the same run repeated: nothing
    changes on disk any more, yet the other host restarts now (the restart noted on it in the
    failed run was kept there) and the shared database is migrated from the Beat host only.
    The same run renews the broker's TLS certificate: Redis restarts with it and the clients follow.
    3. Back to the scenario's settings: both worker hosts restart, one after the other."""
    tasks = "/srv/dhis_sync/dhis_app/services/auto_sync/celery_tasks.py"
    units = {"sync": "celery-worker@sync.service", "monitor": "celery-worker@monitor.service"}
    setting = {"dhis_celery_settings": {"worker_max_tasks_per_child": 400}}
    before = {name: monotonic(cluster[name], unit) for name, unit in units.items()}
    for name in units:
        cluster[name].run(
            f"cp {tasks} /root/celery_tasks.good && echo 'raise RuntimeError(\"bad release 7\")' >> {tasks}"
        )
    try:
        result = play("", {**setting, "dhis_celery_health_timeout": 20}, env=MITOGEN)
        output = result.stdout + result.stderr
        assert result.returncode != 0, output[-3000:]
        failed = re.search(r"celery-worker@(sync|monitor)\.service: .*RuntimeError: bad release 7", output)
        assert failed, output[-3000:]
        other = "monitor" if failed.group(1) == "sync" else "sync"
        after = monotonic(cluster[other], units[other])
        assert after == before[other], f"the rollout went on to {other}: {before} -> {after}\n{output[-6000:]}"
        assert cluster[other].file(f"/etc/dhis-celery/restarts/{units[other]}").exists
    finally:
        for name in units:
            cluster[name].run(f"cp /root/celery_tasks.good {tasks}")
    # The same run renews the broker's certificate (its renewal margin now exceeds what is left).
    issued, redis_started = certificate(cluster["broker"]), entered(cluster["broker"], *REDIS_UNITS)
    renew = {"dhis_celery_tls_cert_days": 400, "dhis_celery_tls_renew_days": 366}
    resumed = play("", {**setting, **renew}, env=MITOGEN)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    renewed = certificate(cluster["broker"])
    assert renewed[0] != issued[0] and renewed[1] - time.time() > 399 * 86400, (issued, renewed)
    assert all(a > b for a, b in zip(entered(cluster["broker"], *REDIS_UNITS), redis_started, strict=True))
    assert monotonic(cluster[other], units[other])[1] > before[other][1], f"{other} kept running the old settings"
    assert not cluster[other].file(f"/etc/dhis-celery/restarts/{units[other]}").exists
    # The shared database is migrated once per cluster, from the Beat host: site.yml's play
    # lists the task for every host; only the Beat host may run it.
    migrate = re.findall(r"TASK \[dhis_celery : Migrations \| .*?\n\n", resumed.stdout, re.S)
    assert migrate, "no migration task in the output"
    assert re.findall(r"^(?:ok|changed): \[([^\]]+)\]", "".join(migrate), re.M) == ["dhis-cl-beat"], migrate
    start = {name: monotonic(cluster[name], unit) for name, unit in units.items()}
    restored = play("", {}, env=MITOGEN)
    assert restored.returncode == 0, (restored.stdout + restored.stderr)[-3000:]
    end = {name: monotonic(cluster[name], unit) for name, unit in units.items()}
    assert certificate(cluster["broker"]) == renewed, "a certificate valid past the margin was issued again"
    for name in units:
        assert end[name][0] > start[name][1], f"the {name} worker was not restarted"
    first, second = sorted(end.values())
    assert first[1] < second[0], f"both worker hosts were down at once: {end}"


def test_a_failed_task_is_in_the_admins_task_results(cluster: dict[str, Any]) -> None:
    """The guide sends ops to the Django admin's "Task Results" for failed tasks: with django-db
    results (this scenario), the failure is a row of that table, whose admin is registered."""
    out = django(
        cluster["web"],
        """
from django.contrib import admin
from django_celery_results.models import TaskResult
from dhis_app.services.auto_sync.celery_tasks import celery_monitor_and_sync
result = celery_monitor_and_sync.apply_async(("not-a-number",), queue="monitor")
try:
    result.get(timeout=60, propagate=False)
except Exception as error:
    print("raised", type(error).__name__)
row = TaskResult.objects.get(task_id=result.id)
print(TaskResult in admin.site._registry, row.status, "not-a-number" in (row.traceback or "") + row.result)
""",
    )
    assert out.strip().splitlines()[-1] == "True FAILURE True", out
