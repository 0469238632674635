"""make bench, cluster section: what a run of playbooks/site.yml costs as hosts are added.

The five hosts are the `cluster` Molecule scenario's (a broker, the web host with the shared
database, two worker hosts, Beat and Flower), created, prepared and converged by Molecule
(not timed), in an ephemeral directory of this run. Then, through the repository's ansible.cfg
as an operator runs it: the no-change run limited to 1, 3 and all 5 hosts (`--limit`, the median
of `runs` each, every run on a settled machine and checked to change nothing), and a run on all
5 that changes a worker setting (every worker restarts, one host at a time behind the health
gate), and the run that changes it back. Ansible's floor (minimal facts and a ping) on 1 and 5
of the same hosts gives the bound the no-change runs are read against.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import FLOOR, ROOT, recaps, sh

SCENARIO = "cluster"
# Growing sets of hosts: one worker host, then both worker hosts and the web host, then all.
SUBSETS = {1: ["dhis-cl-sync"], 3: ["dhis-cl-sync", "dhis-cl-monitor", "dhis-cl-web"], 5: []}
CHANGED = '{"dhis_celery_settings": {"worker_max_tasks_per_child": 400}}'


def measure(runs: int, settle: Callable[[], None], log: Callable[[str], None], keep: bool) -> dict[str, float]:
    """Seconds of each timed run: `noop_1`, `noop_3`, `noop_5`, Ansible's `floor_1` and `floor_5`
    (medians of `runs`), `changed_5`, `restore_5`."""
    results: dict[str, float] = {"runs": runs}
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as ephemeral:
        env = {**os.environ, "MOLECULE_EPHEMERAL_DIRECTORY": ephemeral, "ANSIBLE_NOCOLOR": "1"}
        inventory = str(Path(ephemeral) / "inventory/ansible_inventory.yml")
        try:
            log("cluster: molecule create, prepare, converge -s cluster (not timed)")
            for action in ("create", "prepare", "converge"):
                sh("molecule", action, "-s", SCENARIO, env=env)

            def timed_play(playbook: str, *args: str) -> tuple[float, str]:
                settle()
                start = time.perf_counter()
                out = sh("ansible-playbook", "-i", inventory, playbook, *args, env=env)
                return time.perf_counter() - start, out

            def timed(*args: str) -> tuple[float, str]:
                return timed_play("playbooks/site.yml", *args)

            for size, hosts in SUBSETS.items():
                log(f"cluster: no-change run on {size} host(s) x{runs}")
                limit = ["--limit", ",".join(hosts)] if hosts else []
                times = []
                for _ in range(runs):
                    seconds, out = timed(*limit)
                    counts = {host: counters["changed"] for host, counters in recaps(out).items()}
                    if any(counts.values()) or (hosts and sorted(counts) != sorted(hosts)):
                        sys.exit(f"bench: not a no-change run on {hosts or 'all'}: {counts}\n{out[-3000:]}")
                    times.append(seconds)
                results[f"noop_{size}"] = statistics.median(times)
            # Ansible's floor on the same hosts: what no role can go below as hosts are added.
            floor = Path(ephemeral) / "floor.yml"
            floor.write_text(FLOOR)
            for size, hosts in ((1, SUBSETS[1]), (5, [])):
                log(f"cluster: Ansible's floor on {size} host(s) x{runs}")
                limit = ["--limit", ",".join(hosts)] if hosts else []
                results[f"floor_{size}"] = statistics.median(timed_play(str(floor), *limit)[0] for _ in range(runs))
            for key, extra in (("changed_5", ["-e", CHANGED]), ("restore_5", [])):
                log(f"cluster: {key.replace('_5', '')} run on 5 hosts")
                results[key], out = timed(*extra)
                if not recaps(out).get("dhis-cl-sync", {}).get("changed"):
                    sys.exit(f"bench: the {key} run changed nothing on dhis-cl-sync\n{out[-3000:]}")
        finally:
            if not keep:
                subprocess.run(["molecule", "destroy", "-s", SCENARIO], capture_output=True, env=env, cwd=ROOT)
    return results
