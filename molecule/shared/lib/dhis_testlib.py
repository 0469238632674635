"""Helpers shared by the testinfra suites of every scenario (imported by each conftest.py).

Tests talk to the converged hosts the way a user would: HTTP to the example app, redis-cli,
systemctl, celery through the role's own command. On failure the Celery journal is printed.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from testinfra.utils.ansible_runner import AnsibleRunner

ROOT = Path(__file__).resolve().parents[3]
ROLE_DEFAULTS = ROOT / "roles/dhis_celery/defaults/main.yml"
ENV_FILE = "/etc/dhis_sync/dhis_sync.env"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def setting(host: Any, name: str) -> Any:
    """A role variable as the scenario sets it, else the role's (plain) default."""
    variables = host.ansible.get_variables()
    if name in variables:
        return variables[name]
    return yaml.safe_load(ROLE_DEFAULTS.read_text())[name]


def run(host: Any, command: str, env: dict[str, str] | None = None) -> str:
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
    result = host.run(f"{prefix} {command}" if prefix else command)
    assert result.rc == 0, f"{command!r} failed ({result.rc}): {result.stderr or result.stdout}"
    return result.stdout


def http(host: Any, path: str, method: str = "GET", auth: str = "", port: int = 8000) -> tuple[int, str]:
    """(status, body) of a request made on the host itself."""
    user = f"-u {shlex.quote(auth)}" if auth else ""
    out = host.run(
        f"curl -s --max-time 30 -X {method} {user} -w '\\n%{{http_code}}' http://127.0.0.1:{port}{path}"
    ).stdout
    body, _, status = out.rpartition("\n")
    return int(status or 0), body


def web(host: Any, path: str, method: str = "GET") -> dict:
    status, body = http(host, path, method)
    assert status == 200, f"{method} {path} answered {status}: {body[:500]}"
    return json.loads(body)


TLS_CA = "/etc/dhis-celery-tls/ca.pem"


def redis(host: Any, port: int, *args: str, user: str = "", password: str = "") -> str:
    """redis-cli as a given ACL user (the password travels in REDISCLI_AUTH, not argv), over TLS
    checked against the role's CA when the scenario turns dhis_celery_redis_tls on."""
    auth = f"--user {shlex.quote(user)}" if user else ""
    env = f"REDISCLI_AUTH={shlex.quote(password)} " if password else ""
    tls = f"--tls --cacert {TLS_CA} " if setting(host, "dhis_celery_redis_tls") else ""
    quoted = " ".join(shlex.quote(a) for a in args)
    return host.run(f"{env}redis-cli --no-auth-warning {tls}-p {port} {auth} {quoted}").stdout.strip()


def _as(host: Any, role: str, port: int, args: tuple[str, ...]) -> str:
    """redis() as the inventory's ROLE user ("" for the application's, "admin_" for the admin)."""
    user, password = (setting(host, f"dhis_celery_redis_{role}{what}") for what in ("user", "password"))
    return redis(host, port, *args, user=user, password=password)


def app_redis(host: Any, port: int, *args: str) -> str:
    return _as(host, "", port, args)


def admin_redis(host: Any, port: int, *args: str) -> str:
    return _as(host, "admin_", port, args)


def django(host: Any, code: str) -> str:
    """Run Python in the project with the role's settings, as the application user."""
    script = "import django; django.setup()\n" + code
    return run(host, f"dhis-celery python -c {shlex.quote(script)}")


MITOGEN = {"ANSIBLE_STRATEGY_PLUGINS": str(ROOT / "plugins/strategy"), "ANSIBLE_STRATEGY": "mitogen_linear"}
# Ansible's own strategy: play() inherits the scenario's environment, which may select Mitogen.
LINEAR = {"ANSIBLE_STRATEGY": "ansible.builtin.linear"}


def entered(host: Any, *units: str) -> list[int]:
    """When each unit last became active (systemd's monotonic clock, in µs; 0 if never)."""
    out = run(host, "systemctl show -p ActiveEnterTimestampMonotonic --value -- " + " ".join(map(shlex.quote, units)))
    # One value per unit, the units' blocks separated by an empty line.
    return [int(value) for value in out.split()]


def wait_for(predicate: Callable[[], bool], timeout: float = 30, every: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def project_sql(host: Any, sql: str) -> str:
    """Run SQL through the project's own settings (no role files needed: works after a rollback)."""
    code = f"from django.db import connection\nc = connection.cursor(); c.execute({sql!r}); print(c.fetchone()[0])"
    user, app = setting(host, "dhis_celery_user"), setting(host, "dhis_celery_app_dir")
    out = run(
        host,
        f"cd {app} && set -a && . {ENV_FILE} && set +a && runuser -u {user} -- "
        f"venv/bin/python manage.py shell -c {shlex.quote(code)}",
    )
    return out.strip().splitlines()[-1]  # Django 5.2's shell first prints what it imported


def play(
    host_name: str, extra: dict, *args: str, playbook: str = "playbooks/site.yml", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """ansible-playbook from the controller against one host of the scenario's inventory, or all
    of them when host_name is empty (plain text out); `env` adds environment variables."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(extra, f)
    try:
        result = subprocess.run(
            [
                "ansible-playbook",
                "-i",
                os.environ["MOLECULE_INVENTORY_FILE"],
                *(["--limit", host_name] if host_name else []),
                str(ROOT / playbook),
                "-e",
                f"@{f.name}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", **(env or {})},
        )
    finally:
        os.unlink(f.name)
    # Molecule forces colour; tests read lines, so strip the escape codes anyway.
    return subprocess.CompletedProcess(
        result.args, result.returncode, ANSI.sub("", result.stdout), ANSI.sub("", result.stderr)
    )


# The costly suites run on one host each. The default scenario verifies with one pytest-xdist
# worker per host (molecule/shared/tests/conftest.py), so the suites listed here, on the second
# host, run while the others run on the first: half the wall time of one host doing them all.
# test_metrics stays on the first host, where prepare installs node_exporter.
SECOND_HOST_SUITES = frozenset(
    {
        "test_fast_path",
        "test_liveness",
        "test_memory",
        "test_ops_playbook",
        "test_periodic",
        "test_secrets_in_logs",
        "test_survival",
        "test_verify_playbook",
    }
)


@functools.cache
def scenario_hosts() -> tuple[str, ...]:
    """The scenario's hosts by name, sorted, from Molecule's inventory (each once: testinfra's
    groups.all variable lists each twice)."""
    return tuple(sorted(AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"]).get_hosts("all")))


def only_its_host(host: Any, suite: str) -> Any:
    """The host if `suite` (a test module's name) runs its costly checks on it; else a skip."""
    hosts = scenario_hosts()
    chosen = hosts[1 if suite in SECOND_HOST_SUITES and len(hosts) > 1 else 0]
    if host.backend.get_hostname() != chosen:
        pytest.skip(f"checked on {chosen} only")
    return host


@pytest.fixture
def one_host(host: Any, request: pytest.FixtureRequest) -> Any:
    return only_its_host(host, request.module.__name__.rpartition(".")[2])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    outcome = yield
    report = outcome.get_result()
    host = item.funcargs.get("host") if hasattr(item, "funcargs") else None
    if report.when == "call" and report.failed and host is not None:
        journal = host.run("journalctl --no-pager -n 60 -u 'celery*' -u 'redis*' -u 'dhis-sync*'").stdout
        report.sections.append(("journal of the Celery, Redis and web units", journal))


def send_batch(host: Any, config_id: int, count: int, work_seconds: float = 0.0) -> None:
    """Send `count` sync tasks for `config_id` from the Django side (one process, like the web)."""
    django(
        host,
        f"""
from dhis_app.models import SyncConfig
from dhis_app.services.auto_sync.celery_tasks import celery_trigger_auto_sync
SyncConfig.objects.get_or_create(pk={config_id}, defaults={{"name": "batch-{config_id}"}})
for _ in range({count}):
    celery_trigger_auto_sync.delay({config_id}, {work_seconds})
""",
    )


def completed(host: Any, config_id: int) -> tuple[int, int]:
    """(tasks completed, duplicate executions) for a batch: one row per task id, runs counts executions."""
    out = django(
        host,
        f"""
from django.db.models import Sum
from dhis_app.models import SyncRun
rows = SyncRun.objects.filter(config_id={config_id}, backend="celery")
print(rows.count(), (rows.aggregate(n=Sum("runs"))["n"] or 0) - rows.count())
""",
    )
    done, duplicates = out.split()
    return int(done), int(duplicates)


def queued(host: Any, queue: str) -> int:
    return int(app_redis(host, 6379, "LLEN", queue) or 0)
