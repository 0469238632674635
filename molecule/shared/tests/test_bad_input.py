"""Bad input is refused before anything on the host changes, with a message naming the variable.

Each case runs playbooks/site.yml against the converged host with one invalid variable set.
The play must fail, report changed=0, and leave the role's files and the units' states
byte-identical. The cases run a few at a time (each is an ansible-playbook process), against
one host only (the checks are platform-independent).
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from dhis_certs import CA_PEM, server_cert_and_key
from dhis_testlib import only_its_host, play

W = {"name": "default", "queues": ["celery", "sync", "monitor"]}


def ca_and_certificate(*names: str) -> dict[str, str]:
    """TLS variables as an operator gives them: a CA and a broker certificate naming `names`."""
    cert, key = server_cert_and_key(*names)
    return {
        "dhis_celery_redis_tls": True,
        "dhis_celery_tls_ca_cert": CA_PEM,
        "dhis_celery_redis_tls_cert": cert,
        "dhis_celery_redis_tls_key": key,
    }


# A RabbitMQ broker as an operator would set it, before one of its values is spoiled.
RABBITMQ = {
    "dhis_celery_broker": "rabbitmq",
    "dhis_celery_rabbitmq_password": "rabbit-password-0123456789",
    "dhis_celery_rabbitmq_cookie": "COOKIE0123456789abcdefXYZ",
}

# (id, extra vars, variable the message must name)
CASES: list[tuple[str, dict, str]] = [
    ("state-unknown", {"dhis_celery_state": "maybe"}, "dhis_celery_state"),
    ("no-workers", {"dhis_celery_workers": []}, "dhis_celery_workers"),
    ("worker-name-invalid", {"dhis_celery_workers": [{**W, "name": "bad name!"}]}, "dhis_celery_workers"),
    ("worker-names-duplicate", {"dhis_celery_workers": [W, W]}, "dhis_celery_workers"),
    ("concurrency-zero", {"dhis_celery_workers": [{**W, "concurrency": 0}]}, "concurrency"),
    ("concurrency-not-a-number", {"dhis_celery_workers": [{**W, "concurrency": "many"}]}, "concurrency"),
    ("pool-unknown", {"dhis_celery_workers": [{**W, "pool": "fork"}]}, "pool"),
    ("worker-without-queues", {"dhis_celery_workers": [{"name": "default"}]}, "queues"),
    ("queue-routed-not-consumed", {"dhis_celery_task_routes": {"x.report": {"queue": "reports"}}}, "reports"),
    ("redis-port-out-of-range", {"dhis_celery_redis_port": 70000}, "dhis_celery_redis_port"),
    ("flower-port-zero", {"dhis_celery_flower_port": 0}, "dhis_celery_flower_port"),
    ("cache-port-is-broker-port", {"dhis_celery_redis_cache_port": 6379}, "dhis_celery_redis_cache_port"),
    ("visibility-below-time-limit", {"dhis_celery_visibility_timeout": 600}, "dhis_celery_visibility_timeout"),
    ("soft-limit-above-hard", {"dhis_celery_task_soft_time_limit": 4000}, "dhis_celery_task_soft_time_limit"),
    ("redis-password-unset", {"dhis_celery_redis_password": ""}, "dhis_celery_redis_password"),
    ("redis-password-short", {"dhis_celery_redis_password": "abc"}, "dhis_celery_redis_password"),
    (
        "admin-password-same",
        {"dhis_celery_redis_admin_password": "test-app-password-0123456789"},
        "dhis_celery_redis_admin_password",
    ),
    ("flower-without-users", {"dhis_celery_flower_users": []}, "dhis_celery_flower_users"),
    (
        "flower-password-short",
        {"dhis_celery_flower_users": [{"name": "ops", "password": "short"}]},
        "dhis_celery_flower_users",
    ),
    (
        "flower-user-with-colon",
        {"dhis_celery_flower_users": [{"name": "a:b", "password": "long-enough-pass"}]},
        "dhis_celery_flower_users",
    ),
    ("app-dir-without-manage-py", {"dhis_celery_app_dir": "/srv"}, "dhis_celery_app_dir"),
    ("app-dir-relative", {"dhis_celery_app_dir": "srv/dhis_sync"}, "dhis_celery_app_dir"),
    ("venv-without-python", {"dhis_celery_venv_dir": "/opt/nothing"}, "dhis_celery_venv_dir"),
    (
        "settings-do-not-import",
        {"dhis_celery_django_settings_module": "dhis_sync.settingz"},
        "dhis_celery_django_settings_module",
    ),
    ("user-missing", {"dhis_celery_user": "nosuchuser"}, "dhis_celery_user"),
    (
        "environment-file-missing",
        {"dhis_celery_environment_files": ["/etc/nothing.env"]},
        "dhis_celery_environment_files",
    ),
    ("result-backend-unknown", {"dhis_celery_result_backend": "memcached"}, "dhis_celery_result_backend"),
    ("appendfsync-unknown", {"dhis_celery_redis_appendfsync": "sometimes"}, "dhis_celery_redis_appendfsync"),
    (
        "settings-module-name-invalid",
        {"dhis_celery_settings_module_name": "my-settings"},
        "dhis_celery_settings_module_name",
    ),
    (
        "cache-policy-unknown",
        {"dhis_celery_redis_cache_maxmemory_policy": "lru"},
        "dhis_celery_redis_cache_maxmemory_policy",
    ),
    ("routes-not-a-dict", {"dhis_celery_task_routes": ["sync"]}, "dhis_celery_task_routes"),
    ("workers-not-a-list", {"dhis_celery_workers": "default"}, "dhis_celery_workers"),
    # The plan's classes (plugins/filter/dhis_celery_plan.py), one sample each on a real host.
    ("env-value-with-newline", {"dhis_celery_environment": {"A": "x\nB=y"}}, "dhis_celery_environment.A"),
    ("env-key-loader", {"dhis_celery_environment": {"LD_PRELOAD": "/tmp/x.so"}}, "dhis_celery_environment"),
    ("redis-bind-newline", {"dhis_celery_redis_bind": ["127.0.0.1\nuser x on nopass +@all"]}, "dhis_celery_redis_bind"),
    ("service-user-root", {"dhis_celery_user": "root"}, "dhis_celery_user"),
    (
        "acl-all-given-back",
        {"dhis_celery_redis_user_acl": "~* &* +@all -@admin -@dangerous +@all"},
        "dhis_celery_redis_user_acl",
    ),
    ("redis-user-is-admin", {"dhis_celery_redis_user": "admin"}, "dhis_celery_redis_user"),
    ("cli-name-traversal", {"dhis_celery_cli_name": "../../bin/bash"}, "dhis_celery_cli_name"),
    ("writable-root", {"dhis_celery_writable_paths": ["/"]}, "dhis_celery_writable_paths"),
    ("conf-dir-etc", {"dhis_celery_conf_dir": "/etc"}, "dhis_celery_conf_dir"),
    ("unit-prefix-default", {"dhis_celery_unit_prefix": "default"}, "dhis_celery_unit_prefix"),
    ("pickle-accepted", {"dhis_celery_settings": {"accept_content": ["pickle"]}}, "dhis_celery_settings"),
    ("flower-on-every-address", {"dhis_celery_flower_address": "0.0.0.0"}, "dhis_celery_flower_address"),
    ("liveness-shorter-than-a-ping", {"dhis_celery_liveness_interval": 8}, "dhis_celery_liveness_interval"),
    # TLS (tests/test_plan_tls.py holds the rest): no CA; a given certificate that misses a
    # name clients use (here loopback, where this host's clients reach its Redis).
    ("tls-without-ca", {"dhis_celery_redis_tls": True}, "dhis_celery_tls_ca_cert"),
    ("tls-cert-misses-a-name", ca_and_certificate("broker.invalid"), "dhis_celery_redis_tls_cert"),
    # The suite's host is Debian 12, which packages no Valkey.
    ("valkey-on-debian-12", {"dhis_celery_redis_flavor": "valkey"}, "dhis_celery_redis_flavor"),
    ("flavor-unknown", {"dhis_celery_redis_flavor": "keydb"}, "dhis_celery_redis_flavor"),
    ("broker-unknown", {"dhis_celery_broker": "kafka"}, "dhis_celery_broker"),
    ("rabbitmq-without-cookie", {**RABBITMQ, "dhis_celery_rabbitmq_cookie": ""}, "dhis_celery_rabbitmq_cookie"),
    (
        "rabbitmq-cookie-malformed",
        {**RABBITMQ, "dhis_celery_rabbitmq_cookie": "cookie; rm -rf $HOME"},
        "dhis_celery_rabbitmq_cookie",
    ),
    ("rabbitmq-without-password", {**RABBITMQ, "dhis_celery_rabbitmq_password": ""}, "dhis_celery_rabbitmq_password"),
    ("rabbitmq-tls-without-ca", {**RABBITMQ, "dhis_celery_rabbitmq_tls": True}, "dhis_celery_rabbitmq_tls"),
    (
        "rabbitmq-metrics-user-with-a-colon",
        {**RABBITMQ, "dhis_celery_rabbitmq_metrics_user": "metrics:x"},
        "dhis_celery_rabbitmq_metrics_user",
    ),
    (
        "rabbitmq-metrics-user-is-the-user",
        {**RABBITMQ, "dhis_celery_rabbitmq_metrics_user": "celery"},
        "dhis_celery_rabbitmq_metrics_user",
    ),
    (
        "soft-shutdown-past-stop",
        {"dhis_celery_worker_soft_shutdown_timeout": 5000},
        "dhis_celery_worker_soft_shutdown_timeout",
    ),
]

FINGERPRINT = (
    "{ find /etc/dhis-celery /etc/redis /etc/systemd/system /usr/local/bin -type f -print0 | sort -z"
    " | xargs -0 sha256sum; systemctl is-active redis-server redis-server@cache 'celery-worker@*' celery-beat"
    " celery-flower dhis-sync-web; systemctl show -p ActiveEnterTimestampMonotonic celery-worker@default"
    " celery-beat celery-flower redis-server dhis-sync-web; } | sha256sum"
)


def failure_messages(output: str) -> str:
    """What the failed tasks say: their messages and errors, without the argument spec that a
    failed validate_argument_spec prints beside them (it names every variable)."""
    # One JSON line per failed task (fatal: [host]: FAILED! => {...}) or per failed loop item
    # (failed: [host] (item=...) => {...}).
    lines = re.findall(r"^(?:fatal: \[[^\]]*\]: FAILED!|failed: \[[^\]]*\] \(item=.*?\)) => (\{.*\})$", output, re.M)
    results = [json.loads(line) for line in lines]
    assert results, output[-3000:]
    keys = ("msg", "argument_errors", "stdout", "stderr")
    return "\n".join(str(result.get(key, "")) for result in results for key in keys)


@pytest.fixture(scope="module")
def refusals(host: Any) -> dict[str, Any]:
    """Every case's run, several at once: none may change anything, so the host is fingerprinted
    once before and once after them all (a change by any case fails every case)."""
    host = only_its_host(host, Path(__file__).stem)
    name = host.backend.get_hostname()
    before = host.run(FINGERPRINT).stdout
    with ThreadPoolExecutor(max_workers=3) as pool:
        runs = dict(zip((c[0] for c in CASES), pool.map(lambda case: play(name, case[1]), CASES), strict=True))
    return {"runs": runs, "unchanged": host.run(FINGERPRINT).stdout == before}


@pytest.mark.parametrize(("case", "variable"), [(c[0], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_before_any_change(refusals: dict[str, Any], case: str, variable: str) -> None:
    result = refusals["runs"][case]
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert variable in failure_messages(output), output[-3000:]
    recap = re.search(r"changed=(\d+)", output.split("PLAY RECAP")[-1])
    assert recap and recap.group(1) == "0", output[-3000:]
    assert refusals["unchanged"]


def test_good_input_still_converges_without_change(one_host: Any) -> None:
    """The control case: the same harness with valid input passes (so the refusals are real)."""
    result = play(one_host.backend.get_hostname(), {})
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert re.search(r"changed=0 ", result.stdout.split("PLAY RECAP")[-1]), result.stdout[-3000:]


def test_a_rabbitmq_cluster_of_two_releases_and_two_nodes_is_refused(host: Any) -> None:
    """Both hosts of the scenario (Debian 12 and 13) as the broker group: an even number of nodes,
    and RabbitMQ 3.10 beside 4.0 in one cluster. Both refused before any change on any host."""
    host = only_its_host(host, Path(__file__).stem)
    # Beat off: as a broker group, the scenario's group would also make both hosts Beat hosts.
    result = play("", {**RABBITMQ, "dhis_celery_broker_group": "dhis_celery", "dhis_celery_beat_enabled": False})
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    messages = failure_messages(output)
    assert "dhis_celery_broker_group: the group 'dhis_celery' has 2 hosts" in messages, output[-3000:]
    assert re.search(
        r"dhis_celery_broker_group: .* different Debian releases \((bookworm, trixie|trixie, bookworm)\)", messages
    )
    assert all(n == "0" for n in re.findall(r"changed=(\d+)", output.split("PLAY RECAP")[-1])), output[-3000:]
