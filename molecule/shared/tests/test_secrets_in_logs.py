"""Secrets never show in Ansible's output, even at -vvv with --diff, when they are written.

The run rotates every secret (so the tasks that carry them really run), checks the output,
checks the new Redis password works and the old one no longer does, then restores the
scenario's secrets with a second -vvv run (so the stack tests that follow see them).
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from dhis_testlib import play, redis, setting


def scenario_secrets(host: Any) -> list[str]:
    return [setting(host, "dhis_celery_redis_password"), setting(host, "dhis_celery_redis_admin_password")] + [
        u["password"] for u in setting(host, "dhis_celery_flower_users")
    ]


def test_rotated_secrets_never_show_at_vvv_and_take_effect(one_host: Any) -> None:
    name = one_host.backend.get_hostname()
    new = {
        "dhis_celery_redis_password": secrets.token_urlsafe(24),
        "dhis_celery_redis_admin_password": secrets.token_urlsafe(24),
        "dhis_celery_flower_users": [{"name": "ops", "password": secrets.token_urlsafe(18)}],
    }
    new_values = [
        new["dhis_celery_redis_password"],
        new["dhis_celery_redis_admin_password"],
        new["dhis_celery_flower_users"][0]["password"],
    ]
    old_values = scenario_secrets(one_host)
    user = setting(one_host, "dhis_celery_redis_user")
    try:
        rotated = play(name, new, "-vvv", "--diff")
        output = rotated.stdout + rotated.stderr
        assert rotated.returncode == 0, output[-3000:]
        # The secret-bearing tasks ran and changed the host (censored, so only their names show).
        task = output[output.index("Install the settings set that loaded]") :]
        task = task[: task.index("TASK [")]
        assert re.search(r"^changed: \[", task, re.M), task
        for value in new_values + old_values:
            assert value not in output
        assert redis(one_host, 6379, "PING", user=user, password=new["dhis_celery_redis_password"]) == "PONG"
        refused = redis(one_host, 6379, "PING", user=user, password=old_values[0])
        assert refused != "PONG" and "AUTH" in refused, refused
    finally:
        restored = play(name, {}, "-vvv")
    output = restored.stdout + restored.stderr
    assert restored.returncode == 0, output[-3000:]
    for value in new_values + old_values:
        assert value not in output
