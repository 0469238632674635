"""The plan's rules, on the controller: each bad value is refused naming its variable, good values pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from source import load

ROOT = Path(__file__).resolve().parents[1]
ROLE = ROOT / "roles/dhis_celery"
PLAN = load("plugins/filter/dhis_celery_plan.py")

PARTS = {"workers": True, "beat": True, "flower": True, "redis": True}
FACTS = {"vcpus": 4, "addresses": ["127.0.0.1", "10.0.0.5", "::1"]}
W = {"name": "default", "queues": ["celery", "sync", "monitor"]}


def good() -> dict[str, Any]:
    """The role's defaults with their templated values replaced, plus valid secrets."""
    values = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    values.update(
        dhis_celery_venv_dir="/srv/dhis_sync/venv",
        dhis_celery_redis_bind=["127.0.0.1", "-::1"],
        dhis_celery_redis_host="127.0.0.1",
        dhis_celery_redis_cache_host="127.0.0.1",
        dhis_celery_redis_cache_db=0,
        dhis_celery_redis_cache_maxmemory_mb=64,
        dhis_celery_worker_stop_timeout=1860,
        dhis_celery_unit_private_users=True,
        dhis_celery_redis_password="app-password-0123456789",
        dhis_celery_redis_admin_password="admin-password-0123456789",
        dhis_celery_flower_users=[{"name": "ops", "password": "flower-password-1"}],
    )
    return values


def problems(**overrides: Any) -> list[str]:
    return PLAN.dhis_celery_plan({**good(), **overrides}, PARTS, FACTS)["problems"]


def test_the_defaults_have_no_problem() -> None:
    assert problems() == []


HARD = "s3cr3t;touch /root/x $HOME `id` 'q' \"d\" \\ # % é 😀 ü"

# (id, overrides, text the one message must start with: the variable it names)
BAD: list[tuple[str, dict[str, Any], str]] = [
    # control characters, wherever they land
    ("env-value-newline", {"dhis_celery_environment": {"A": "x\nB=y"}}, "dhis_celery_environment.A"),
    ("bind-newline", {"dhis_celery_redis_bind": ["127.0.0.1\nuser evil on nopass +@all"]}, "dhis_celery_redis_bind"),
    ("password-nul", {"dhis_celery_redis_password": "a" * 20 + "\x00"}, "dhis_celery_redis_password"),
    ("scheduler-newline", {"dhis_celery_beat_scheduler": "x:Y\nExecStartPre=+/bin/sh"}, "dhis_celery_beat_scheduler"),
    ("acl-tab", {"dhis_celery_redis_user_acl": "~*\t+@all"}, "dhis_celery_redis_user_acl"),
    ("flower-prefix-cr", {"dhis_celery_flower_url_prefix": "a\rb"}, "dhis_celery_flower_url_prefix"),
    ("settings-key-newline", {"dhis_celery_django_settings": {"A\nB": 1}}, "dhis_celery_django_settings"),
    ("periodic-escape", {"dhis_celery_periodic_tasks": [{"name": "x\x1b[2J", "task": "t"}]}, "dhis_celery_periodic"),
    ("queue-newline", {"dhis_celery_default_queue": "celery\n"}, "dhis_celery_default_queue"),
    ("timezone-newline", {"dhis_celery_timezone": "UTC\n"}, "dhis_celery_timezone"),
    # identifiers, matched whole
    ("user-root", {"dhis_celery_user": "root"}, "dhis_celery_user"),
    ("group-root", {"dhis_celery_group": "root"}, "dhis_celery_group"),
    ("user-trailing-newline", {"dhis_celery_user": "www-data\n"}, "dhis_celery_user"),
    ("user-space", {"dhis_celery_user": "www data"}, "dhis_celery_user"),
    ("user-uppercase", {"dhis_celery_user": "WWW"}, "dhis_celery_user"),
    ("prefix-default", {"dhis_celery_unit_prefix": "default"}, "dhis_celery_unit_prefix"),
    ("prefix-multi-user", {"dhis_celery_unit_prefix": "multi-user"}, "dhis_celery_unit_prefix"),
    ("prefix-systemd", {"dhis_celery_unit_prefix": "systemd-journald"}, "dhis_celery_unit_prefix"),
    ("prefix-slash", {"dhis_celery_unit_prefix": "../x"}, "dhis_celery_unit_prefix"),
    ("prefix-specifier", {"dhis_celery_unit_prefix": "c%i"}, "dhis_celery_unit_prefix"),
    ("cli-traversal", {"dhis_celery_cli_name": "../../bin/bash"}, "dhis_celery_cli_name"),
    ("cli-bash", {"dhis_celery_cli_name": "bash"}, "dhis_celery_cli_name"),
    ("cli-sudo", {"dhis_celery_cli_name": "sudo"}, "dhis_celery_cli_name"),
    ("cli-trailing-newline", {"dhis_celery_cli_name": "dc\n"}, "dhis_celery_cli_name"),
    ("cli-hidden", {"dhis_celery_cli_name": ".dc"}, "dhis_celery_cli_name"),
    ("settings-module-dash", {"dhis_celery_settings_module_name": "my-settings"}, "dhis_celery_settings_module_name"),
    ("settings-module-newline", {"dhis_celery_settings_module_name": "s\n"}, "dhis_celery_settings_module_name"),
    ("app-module-space", {"dhis_celery_app_module": "a b"}, "dhis_celery_app_module"),
    ("app-module-semicolon", {"dhis_celery_app_module": "x;import os"}, "dhis_celery_app_module"),
    ("django-settings-quote", {"dhis_celery_django_settings_module": "x'y"}, "dhis_celery_django_settings_module"),
    ("scheduler-space", {"dhis_celery_beat_scheduler": "a b:C"}, "dhis_celery_beat_scheduler"),
    ("beat-fence-ttl-short", {"dhis_celery_beat_fence_ttl": 2}, "dhis_celery_beat_fence_ttl"),
    (
        "liveness-shorter-than-a-ping",
        {"dhis_celery_liveness_interval": 14, "dhis_celery_liveness_timeout": 10},
        "dhis_celery_liveness_interval",
    ),
    ("liveness-failures-zero", {"dhis_celery_liveness_failures": 0}, "dhis_celery_liveness_failures"),
    (
        "memory-max-too-small",
        {"dhis_celery_workers": [{"name": "w", "queues": ["celery"], "memory_max": "64M"}]},
        "dhis_celery_workers[0].memory_max",
    ),
    ("revision-newline", {"dhis_celery_app_revision": "v1\nExecStartPre=/bin/sh"}, "dhis_celery_app_revision"),
    (
        "soft-shutdown-past-stop",
        {"dhis_celery_worker_soft_shutdown_timeout": 120, "dhis_celery_worker_stop_timeout": 90},
        "dhis_celery_worker_soft_shutdown_timeout",
    ),
    ("web-unit-space", {"dhis_celery_django_service": "gunicorn service"}, "dhis_celery_django_service"),
    ("worker-name-bang", {"dhis_celery_workers": [{**W, "name": "bad name!"}]}, "dhis_celery_workers[0].name"),
    ("worker-name-dup", {"dhis_celery_workers": [W, W]}, "dhis_celery_workers[1].name"),
    ("worker-name-newline", {"dhis_celery_workers": [{**W, "name": "a\n"}]}, "dhis_celery_workers[0].name"),
    ("worker-queue-space", {"dhis_celery_workers": [{**W, "queues": ["a b"]}]}, "dhis_celery_workers[0].queues"),
    ("worker-no-queues", {"dhis_celery_workers": [{"name": "default"}]}, "dhis_celery_workers[0].queues"),
    ("worker-concurrency-0", {"dhis_celery_workers": [{**W, "concurrency": 0}]}, "dhis_celery_workers[0].concurrency"),
    ("worker-concurrency-word", {"dhis_celery_workers": [{**W, "concurrency": "x"}]}, "dhis_celery_workers[0].conc"),
    ("worker-pool", {"dhis_celery_workers": [{**W, "pool": "fork"}]}, "dhis_celery_workers[0].pool"),
    ("worker-loglevel", {"dhis_celery_workers": [{**W, "loglevel": "loud"}]}, "dhis_celery_workers[0].loglevel"),
    ("worker-extra-space", {"dhis_celery_workers": [{**W, "extra_args": ["--a b"]}]}, "dhis_celery_workers[0].extra"),
    ("worker-extra-dollar", {"dhis_celery_workers": [{**W, "extra_args": ["--x=$HOME"]}]}, "dhis_celery_workers[0].ex"),
    ("worker-memory-words", {"dhis_celery_workers": [{**W, "memory_max": "lots"}]}, "dhis_celery_workers[0].memory_m"),
    ("worker-memory-newline", {"dhis_celery_workers": [{**W, "memory_high": "1G\nX=1"}]}, "dhis_celery_workers[0].mem"),
    ("worker-child-below-0", {"dhis_celery_workers": [{**W, "max_tasks_per_child": -1}]}, "dhis_celery_workers[0].max"),
    ("worker-unknown-key", {"dhis_celery_workers": [{**W, "queue": "x"}]}, "dhis_celery_workers[0]"),
    ("workers-empty", {"dhis_celery_workers": []}, "dhis_celery_workers"),
    ("workers-not-list", {"dhis_celery_workers": "default"}, "dhis_celery_workers"),
    ("flower-user-colon", {"dhis_celery_flower_users": [{"name": "a:b", "password": "x" * 20}]}, "dhis_celery_flower"),
    # paths
    ("app-dir-relative", {"dhis_celery_app_dir": "srv/app"}, "dhis_celery_app_dir"),
    ("app-dir-dotdot", {"dhis_celery_app_dir": "/srv/app/../etc"}, "dhis_celery_app_dir"),
    ("app-dir-trailing-slash", {"dhis_celery_app_dir": "/srv/app/"}, "dhis_celery_app_dir"),
    ("app-dir-space", {"dhis_celery_app_dir": "/srv/my app"}, "dhis_celery_app_dir"),
    ("app-dir-percent", {"dhis_celery_app_dir": "/srv/%h"}, "dhis_celery_app_dir"),
    ("venv-usr", {"dhis_celery_venv_dir": "/usr"}, "dhis_celery_venv_dir"),
    ("conf-dir-etc", {"dhis_celery_conf_dir": "/etc"}, "dhis_celery_conf_dir"),
    ("conf-dir-root", {"dhis_celery_conf_dir": "/"}, "dhis_celery_conf_dir"),
    ("conf-dir-home", {"dhis_celery_conf_dir": "/home"}, "dhis_celery_conf_dir"),
    ("conf-dir-var-lib", {"dhis_celery_conf_dir": "/var/lib"}, "dhis_celery_conf_dir"),
    ("conf-dir-usr-sub", {"dhis_celery_conf_dir": "/usr/share/x"}, "dhis_celery_conf_dir"),
    ("writable-root", {"dhis_celery_writable_paths": ["/"]}, "dhis_celery_writable_paths[0]"),
    ("writable-etc", {"dhis_celery_writable_paths": ["/etc/ssh"]}, "dhis_celery_writable_paths[0]"),
    ("writable-usr", {"dhis_celery_writable_paths": ["/usr/local/bin"]}, "dhis_celery_writable_paths[0]"),
    ("writable-quote", {"dhis_celery_writable_paths": ["/srv/a'b"]}, "dhis_celery_writable_paths[0]"),
    ("env-file-relative", {"dhis_celery_environment_files": ["env"]}, "dhis_celery_environment_files[0]"),
    ("python-path-relative", {"dhis_celery_python_path": ["src"]}, "dhis_celery_python_path[0]"),
    ("ca-file-relative", {"dhis_celery_pip_ca_file": "ca.crt"}, "dhis_celery_pip_ca_file"),
    # environment keys
    ("env-key-path", {"dhis_celery_environment": {"PATH": "/tmp"}}, "dhis_celery_environment"),
    ("env-key-ld-preload", {"dhis_celery_environment": {"LD_PRELOAD": "/tmp/x.so"}}, "dhis_celery_environment"),
    ("env-key-bash-env", {"dhis_celery_environment": {"BASH_ENV": "/tmp/x"}}, "dhis_celery_environment"),
    ("env-key-pythonpath", {"dhis_celery_environment": {"PYTHONPATH": "/tmp"}}, "dhis_celery_environment"),
    ("env-key-pythonstartup", {"dhis_celery_environment": {"PYTHONSTARTUP": "/tmp/x"}}, "dhis_celery_environment"),
    ("env-key-settings", {"dhis_celery_environment": {"DJANGO_SETTINGS_MODULE": "x"}}, "dhis_celery_environment"),
    ("env-key-invalid", {"dhis_celery_environment": {"A-B": "x"}}, "dhis_celery_environment"),
    ("env-key-trailing-newline", {"dhis_celery_environment": {"A\n": "x"}}, "dhis_celery_environment"),
    ("env-value-dict", {"dhis_celery_environment": {"A": {"b": 1}}}, "dhis_celery_environment"),
    # Redis ACL and users
    (
        "acl-nopass",
        {"dhis_celery_redis_user_acl": "~* &* nopass +@all -@admin -@dangerous"},
        "dhis_celery_redis_user_acl",
    ),
    (
        "acl-all-back",
        {"dhis_celery_redis_user_acl": "~* &* +@all -@admin -@dangerous +@all"},
        "dhis_celery_redis_user_acl",
    ),
    ("acl-allcommands", {"dhis_celery_redis_user_acl": "~* allcommands"}, "dhis_celery_redis_user_acl"),
    ("acl-plus-admin", {"dhis_celery_redis_user_acl": "~* +@read +@admin"}, "dhis_celery_redis_user_acl"),
    ("acl-plus-dangerous", {"dhis_celery_redis_user_acl": "~* +@read +@dangerous"}, "dhis_celery_redis_user_acl"),
    ("acl-config", {"dhis_celery_redis_user_acl": "~* +@read +config|set"}, "dhis_celery_redis_user_acl"),
    ("acl-flushall", {"dhis_celery_redis_user_acl": "~* +@read +flushall"}, "dhis_celery_redis_user_acl"),
    ("acl-password", {"dhis_celery_redis_user_acl": "~* +@read >other"}, "dhis_celery_redis_user_acl"),
    ("acl-hash", {"dhis_celery_redis_user_acl": "~* +@read #abc"}, "dhis_celery_redis_user_acl"),
    ("acl-off", {"dhis_celery_redis_user_acl": "off ~* +@read"}, "dhis_celery_redis_user_acl"),
    ("user-is-admin", {"dhis_celery_redis_user": "admin"}, "dhis_celery_redis_user"),
    ("user-default", {"dhis_celery_redis_user": "default"}, "dhis_celery_redis_user"),
    ("admin-default", {"dhis_celery_redis_admin_user": "default"}, "dhis_celery_redis_admin_user"),
    ("user-space", {"dhis_celery_redis_user": "a b"}, "dhis_celery_redis_user"),
    ("metrics-user-is-user", {"dhis_celery_redis_metrics_user": "celery"}, "dhis_celery_redis_metrics_user"),
    ("metrics-user-space", {"dhis_celery_redis_metrics_user": "q m"}, "dhis_celery_redis_metrics_user"),
    ("metrics-interval-negative", {"dhis_celery_queue_metrics_interval": -1}, "dhis_celery_queue_metrics_interval"),
    # serializers
    ("accept-pickle", {"dhis_celery_settings": {"accept_content": ["json", "pickle"]}}, "dhis_celery_settings"),
    ("task-yaml", {"dhis_celery_settings": {"task_serializer": "yaml"}}, "dhis_celery_settings"),
    ("result-pickle", {"dhis_celery_settings": {"result_serializer": "pickle"}}, "dhis_celery_settings"),
    ("django-celery-pickle", {"dhis_celery_django_settings": {"CELERY_ACCEPT_CONTENT": ["pickle"]}}, "dhis_celery"),
    # exposure
    ("flower-any", {"dhis_celery_flower_address": "0.0.0.0"}, "dhis_celery_flower_address"),
    ("flower-public", {"dhis_celery_flower_address": "203.0.113.7"}, "dhis_celery_flower_address"),
    ("bind-any", {"dhis_celery_redis_bind": ["0.0.0.0"]}, "dhis_celery_redis_bind"),
    ("bind-other-private", {"dhis_celery_redis_bind": ["127.0.0.1", "10.9.9.9"]}, "dhis_celery_redis_bind"),
    ("bind-name", {"dhis_celery_redis_bind": ["redis.example.org"]}, "dhis_celery_redis_bind"),
    # secrets and numbers
    ("password-short", {"dhis_celery_redis_password": "abc"}, "dhis_celery_redis_password"),
    ("admin-short", {"dhis_celery_redis_admin_password": "abc"}, "dhis_celery_redis_admin_password"),
    ("admin-same", {"dhis_celery_redis_admin_password": "app-password-0123456789"}, "dhis_celery_redis_admin_pass"),
    ("flower-no-users", {"dhis_celery_flower_users": []}, "dhis_celery_flower_users"),
    ("flower-password-short", {"dhis_celery_flower_users": [{"name": "o", "password": "s"}]}, "dhis_celery_flower"),
    ("port-high", {"dhis_celery_redis_port": 70000}, "dhis_celery_redis_port"),
    ("port-zero", {"dhis_celery_flower_port": 0}, "dhis_celery_flower_port"),
    ("cache-port-same", {"dhis_celery_redis_cache_port": 6379}, "dhis_celery_redis_cache_port"),
    ("visibility-low", {"dhis_celery_visibility_timeout": 600}, "dhis_celery_visibility_timeout"),
    ("soft-above-hard", {"dhis_celery_task_soft_time_limit": 4000}, "dhis_celery_task_soft_time_limit"),
    ("stop-timeout-zero", {"dhis_celery_worker_stop_timeout": 0}, "dhis_celery_worker_stop_timeout"),
    ("health-timeout-zero", {"dhis_celery_health_timeout": 0}, "dhis_celery_health_timeout"),
    ("routes-not-dict", {"dhis_celery_task_routes": ["sync"]}, "dhis_celery_task_routes"),
]


@pytest.mark.parametrize(("overrides", "variable"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_value_is_refused_naming_its_variable(overrides: dict[str, Any], variable: str) -> None:
    found = problems(**overrides)
    assert found, f"{overrides} was accepted"
    assert any(p.startswith(variable) for p in found), found


GOOD: list[tuple[str, dict[str, Any]]] = [
    ("hard-env-value", {"dhis_celery_environment": {"DB_PASSWORD": HARD}}),
    ("hard-redis-password", {"dhis_celery_redis_password": HARD}),
    ("hard-flower-password", {"dhis_celery_flower_users": [{"name": "ops", "password": HARD}]}),
    ("private-bind", {"dhis_celery_redis_bind": ["127.0.0.1", "-::1", "10.0.0.5"]}),
    ("public-opt-in", {"dhis_celery_flower_address": "0.0.0.0", "dhis_celery_allow_public_listen": True}),
    (
        "pickle-opt-in",
        {"dhis_celery_settings": {"accept_content": ["pickle"]}, "dhis_celery_allow_unsafe_serializers": True},
    ),
    ("acl-narrower", {"dhis_celery_redis_user_acl": "~* &* +@all -@admin -@dangerous -keys"}),
    ("no-app-module", {"dhis_celery_app_module": ""}),
    ("src-layout", {"dhis_celery_python_path": ["/srv/shop/src"]}),
    ("other-prefix", {"dhis_celery_unit_prefix": "shop-celery", "dhis_celery_conf_dir": "/etc/shop-celery"}),
    ("json-explicit", {"dhis_celery_settings": {"accept_content": ["json", "application/json"]}}),
]


@pytest.mark.parametrize("overrides", [c[1] for c in GOOD], ids=[c[0] for c in GOOD])
def test_good_value_is_accepted(overrides: dict[str, Any]) -> None:
    assert problems(**overrides) == []


def test_a_secret_is_never_echoed_in_a_problem() -> None:
    secret = "not-long\nenough"
    assert all(secret not in p for p in problems(dhis_celery_redis_password=secret))


def test_worker_defaults_are_filled_in_once() -> None:
    plan = PLAN.dhis_celery_plan({**good(), "dhis_celery_workers": [{"name": "a", "queues": ["celery"]}]}, PARTS, FACTS)
    assert plan["workers"] == [
        {
            # The defaults' values are pinned against the argument spec below; here: all filled in.
            **PLAN.WORKER_DEFAULTS,
            "name": "a",
            "queues": ["celery"],
            "child_args": [],
            "concurrency": 4,
            "prefetch_multiplier": 1,
            "unit": "celery-worker@a.service",
            "env_file": "/etc/dhis-celery/worker-a.env",
            "memory_dropin": "/etc/systemd/system/celery-worker@a.service.d/memory.conf",
            "memory_fenced": False,
        }
    ]
    assert plan["running_units"] == ["celery-worker@a.service", "celery-beat.service", "celery-flower.service"]
    assert plan["unrouted_queues"] == ["sync", "monitor"]


def test_memory_fences_become_child_arguments_and_a_drop_in() -> None:
    worker = {"name": "a", "queues": ["celery"], "max_tasks_per_child": 50, "max_memory_per_child": 200000}
    plan = PLAN.dhis_celery_plan({**good(), "dhis_celery_workers": [{**worker, "memory_max": "1G"}]}, PARTS, FACTS)
    assert plan["problems"] == []
    (planned,) = plan["workers"]
    assert planned["child_args"] == ["--max-tasks-per-child=50", "--max-memory-per-child=200000"]
    assert planned["memory_fenced"] and planned["memory_high"] == ""


@pytest.mark.parametrize(
    ("pool", "broker", "given", "expected"),
    [
        ("prefork", "redis", {}, 1),
        ("threads", "redis", {}, 1),
        # A green pool's synchronous consumer on Redis would wait a second after each full batch.
        ("gevent", "redis", {}, 2),
        ("eventlet", "redis", {}, 2),
        ("gevent", "rabbitmq", {}, 1),
        ("gevent", "redis", {"prefetch_multiplier": 1}, 1),
        ("prefork", "redis", {"prefetch_multiplier": 4}, 4),
    ],
)
def test_each_worker_gets_its_prefetch_multiplier(pool: str, broker: str, given: dict, expected: int) -> None:
    worker = {"name": "a", "queues": ["celery"], "pool": pool, **given}
    inputs = {**good(), "dhis_celery_workers": [worker], "dhis_celery_broker": broker}
    plan = PLAN.dhis_celery_plan(inputs, PARTS, FACTS)
    assert [w["prefetch_multiplier"] for w in plan["workers"]] == [expected]


@pytest.mark.parametrize(
    ("workers", "broker", "expected"),
    [
        # kombu's default (10) stays where every acknowledgement comes from the worker's event loop.
        ([("prefork", 8), ("threads", 32)], "redis", 0),
        # Each greenlet may hold a connection of its own: the largest green pool's, on top of the default.
        ([("prefork", 2), ("gevent", 16), ("eventlet", 64)], "redis", 74),
        ([("gevent", 64)], "rabbitmq", 0),
    ],
)
def test_a_green_pool_raises_the_cap_on_its_broker_connections(
    workers: list[tuple[str, int]], broker: str, expected: int
) -> None:
    declared = [{"name": f"w{i}", "queues": ["q"], "pool": p, "concurrency": n} for i, (p, n) in enumerate(workers)]
    inputs = {**good(), "dhis_celery_workers": declared, "dhis_celery_broker": broker}
    plan = PLAN.dhis_celery_plan(inputs, PARTS, FACTS)
    assert plan["problems"] == []
    assert plan["broker_max_connections"] == expected


def test_a_prefetch_multiplier_of_zero_is_refused_naming_the_worker() -> None:
    worker = {"name": "a", "queues": ["celery"], "prefetch_multiplier": 0}
    assert [p.split(":")[0] for p in problems(dhis_celery_workers=[worker])] == [
        "dhis_celery_workers[0].prefetch_multiplier"
    ]
    assert [p.split(":")[0] for p in problems(dhis_celery_worker_prefetch_multiplier="two")] == [
        "dhis_celery_worker_prefetch_multiplier"
    ]


def test_a_host_without_the_workers_part_runs_no_worker() -> None:
    plan = PLAN.dhis_celery_plan(good(), {**PARTS, "workers": False, "flower": False}, FACTS)
    assert plan["workers"] == [] and plan["running_units"] == ["celery-beat.service"]


def test_the_role_app_stands_in_when_the_project_has_none() -> None:
    assert PLAN.dhis_celery_plan({**good(), "dhis_celery_app_module": ""}, PARTS, FACTS)["celery_app"] == (
        "dhis_celery_bootstrap.celery:app"
    )


@pytest.mark.parametrize("value", [HARD, "", "plain", "a=b", "trailing space ", " leading", "\\n literal", "'"])
def test_env_quoting_round_trips_through_the_runner_parser(value: str) -> None:
    runner = load("roles/dhis_celery/files/dhis_celery_run.py")
    text = f"# comment\nA={PLAN.systemd_env_quote(value)}\nB=1\n"
    assert runner.parse_env(text) == {"A": value, "B": "1"}


def test_python_literal_keeps_non_bmp_characters() -> None:
    namespace: dict[str, Any] = {}
    exec(f"X = {PLAN.python_literal({'p': HARD, 'n': [1, True, None]})}", namespace)
    assert namespace["X"] == {"p": HARD, "n": [1, True, None]}


def test_worker_defaults_agree_with_the_argument_spec() -> None:
    spec = yaml.safe_load((ROLE / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    suboptions = spec["dhis_celery_workers"]["options"]
    for key, value in PLAN.WORKER_DEFAULTS.items():
        assert suboptions[key].get("default", []) == value, key


def test_a_pool_s_own_library_is_installed_only_where_a_worker_runs_that_pool() -> None:
    def packages(workers: list[dict], parts: dict = PARTS) -> list[str]:
        return PLAN.dhis_celery_plan({**good(), "dhis_celery_workers": workers}, parts, FACTS)["pip_packages"]

    base = good()["dhis_celery_pip_packages"]
    assert packages([W]) == base
    io = {"name": "sync", "queues": ["sync"], "pool": "gevent", "concurrency": 64}
    assert packages([W, io, {**io, "name": "sync2"}]) == [*base, "gevent==26.9.0"]
    # A host that runs no worker (the web or Beat host) needs none.
    assert packages([W, io], {**PARTS, "workers": False}) == base


def test_a_pool_s_packages_must_be_a_list_of_requirements() -> None:
    io = {"name": "sync", "queues": ["sync"], "pool": "gevent"}
    found = problems(dhis_celery_workers=[io], dhis_celery_pip_pool_packages={"gevent": "gevent"})
    assert [p.split(":")[0] for p in found] == ["dhis_celery_pip_pool_packages"]


GROUPS = ("celery_redis", "celery_broker", "celery_workers", ["celery_beat", "celery_flower", "celery_web"])


@pytest.mark.parametrize(
    ("groups", "remote"),
    [
        # One host, no groups, or every group on the Redis host: loopback only.
        ({}, False),
        ({g: ["a"] for g in ("celery_redis", "celery_broker", "celery_workers", "celery_beat")}, False),
        # Workers on hosts of their own (the cluster scenario, the production inventory).
        ({"celery_redis": ["r"], "celery_broker": ["r"], "celery_workers": ["w1", "w2"]}, True),
        # Workers beside Redis, Beat on a host of its own: Beat reaches Redis over the network.
        ({"celery_redis": ["a"], "celery_broker": ["a"], "celery_workers": ["a"], "celery_beat": ["b"]}, True),
        # RabbitMQ on the worker hosts, Redis on a host of its own.
        ({"celery_redis": ["r"], "celery_broker": ["w1", "w2", "w3"], "celery_workers": ["w1", "w2", "w3"]}, True),
        # RabbitMQ nodes of their own and every group on the Redis host: web hosts need no group
        # and may sit elsewhere, so Redis still listens (the safe side).
        ({"celery_redis": ["a"], "celery_broker": ["m1", "m2", "m3"], "celery_workers": ["a"]}, True),
        # RabbitMQ on three nodes that run everything (the Redis group defaults to the broker's):
        # Redis runs on the first, the other two reach it over the network.
        ({"celery_redis": ["m1", "m2", "m3"], "celery_broker": ["m1", "m2", "m3"]}, True),
    ],
)
def test_redis_listens_beyond_loopback_when_some_host_reaches_it_over_the_network(groups: dict, remote: bool) -> None:
    assert PLAN.redis_reached_remotely(groups, *GROUPS) is remote
