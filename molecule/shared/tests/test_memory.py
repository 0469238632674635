"""Memory fences on a worker instance (dhis_celery_workers: max_memory_per_child, memory_high,
memory_max): Celery replaces a pool child that a task left above the limit, no task is lost,
systemd holds the instance under MemoryHigh/MemoryMax, and dropping the fences removes them."""

from __future__ import annotations

import sys
from typing import Any

from dhis_testlib import ROOT, django, play, run, setting

sys.path.insert(0, str(ROOT / "plugins/filter"))
from dhis_celery_plan import MIN_WORKER_MEMORY

UNIT = "celery-worker@default"
DROPIN = f"/etc/systemd/system/{UNIT}.service.d/memory.conf"
LEAK = """
from celery.result import ResultSet
from dhis_app.services.auto_sync.celery_tasks import celery_leak
sent = ResultSet([celery_leak.apply_async((40,), queue="celery") for _ in range(12)])
print(" ".join(str(pid) for pid in sent.join_native(timeout=180)))
"""


def test_an_idle_worker_holds_more_than_the_smallest_limit_the_role_accepts(one_host: Any) -> None:
    """The role refuses a memory_max or memory_high below MIN_WORKER_MEMORY as too small to start
    a worker: an idle instance of the example must hold more than that."""
    current = int(run(one_host, f"systemctl show -p MemoryCurrent --value {UNIT}").strip())
    assert current > MIN_WORKER_MEMORY, current


def test_a_leaking_task_gets_its_child_replaced_and_no_task_is_lost(one_host: Any) -> None:
    name = one_host.backend.get_hostname()
    workers = setting(one_host, "dhis_celery_workers")
    fenced = [{**w, "max_memory_per_child": 150000, "memory_high": "768M", "memory_max": "1G"} for w in workers]
    try:
        result = play(name, {"dhis_celery_workers": fenced})
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        limits = run(one_host, f"systemctl show -p MemoryHigh -p MemoryMax {UNIT}").split()
        assert sorted(limits) == [f"MemoryHigh={768 * 2**20}", f"MemoryMax={2**30}"], limits
        concurrency = next(w for w in fenced if w["name"] == "default")["concurrency"]
        # 12 tasks each keeping 40 MiB in their child: without the limit the same `concurrency`
        # children would run all of them (and grow to about 240 MiB each).
        pids = django(one_host, LEAK).split()
        assert len(pids) == 12, pids
        assert len(set(pids)) > concurrency, f"no pool child was replaced: {pids}"
    finally:
        restored = play(name, {})
        assert restored.returncode == 0, (restored.stdout + restored.stderr)[-3000:]
    assert not one_host.file(DROPIN).exists
    assert run(one_host, f"systemctl show -p MemoryMax --value {UNIT}").strip() == "infinity"
