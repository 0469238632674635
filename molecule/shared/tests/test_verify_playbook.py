"""playbooks/verify.yml: the guide's post-migration checks as a playbook, read-only."""

from __future__ import annotations

import re
from typing import Any

from dhis_testlib import app_redis, django, play, run


def test_verify_playbook_passes_and_reports(one_host: Any) -> None:
    result = play(one_host.backend.get_hostname(), {}, playbook="playbooks/verify.yml")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "problems: none" in result.stdout
    assert re.search(r"health check round trip: [0-9.]+ ms", result.stdout)
    assert "flower without/with credentials: [401, 200]" in result.stdout
    hostname = run(one_host, "hostname").strip()
    pid = run(one_host, "systemctl show -p MainPID --value celery-beat").strip()
    assert f"beat fence held by: {hostname} pid {pid} " in result.stdout
    assert re.search(r"changed=0 ", result.stdout.split("PLAY RECAP")[-1])


def test_verify_playbook_names_a_stopped_worker_and_counts_kombus_priority_lists(one_host: Any) -> None:
    """With the worker stopped, verify.yml fails naming it; the messages sent meanwhile with a
    priority wait in a list of their own (QUEUE\\x06\\x169), and the report counts them."""
    run(one_host, "systemctl stop celery-worker@default")
    try:
        django(
            one_host,
            "from dhis_app.services.auto_sync.celery_tasks import celery_trigger_auto_sync as sync\n"
            "for _ in range(3): sync.apply_async(kwargs={'config_id': 9101}, queue='sync', priority=9)",
        )
        assert app_redis(one_host, 6379, "LLEN", "sync\x06\x169") == "3"
        result = play(one_host.backend.get_hostname(), {}, playbook="playbooks/verify.yml")
    finally:
        run(one_host, "systemctl start celery-worker@default")
    assert result.returncode != 0
    assert "celery-worker@default.service: inactive (dead)" in result.stdout, result.stdout[-3000:]
    assert re.search(r"messages waiting: [^\n]*\bsync=3\b", result.stdout), result.stdout[-3000:]
