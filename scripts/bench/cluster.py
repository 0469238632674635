"""make bench, cluster section: what a run of playbooks/site.yml costs as hosts are added.

The five hosts are the `cluster` Molecule scenario's (a broker, the web host with the shared
database, two worker hosts, Beat and Flower), created, prepared and converged by Molecule
(not timed), in an ephemeral directory of this run. Then, through the repository's ansible.cfg
as an operator runs it: the no-change run limited to 1, 3 and all 5 hosts (`--limit`, the median
of `runs` each, every run on a settled machine and checked to change nothing), and a run on all
5 that changes a worker setting (every worker restarts, one host at a time behind the health
gate), and the run that changes it back. Ansible's floor (minimal facts and a ping) on 1 and 5
of the same hosts gives the bound the no-change runs are read against. Beside each no-change and
floor run, the CPU it cost: the whole machine's (its five containers and the controller share
its cores) and the controller's alone (ansible-playbook and its forks), the median of `runs`.
"""

from __future__ import annotations

import os
import resource
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


def busy_cpu() -> float:
    """CPU seconds this machine has spent busy since boot, all cores (/proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user, nice, system, (idle, iowait skipped), irq, softirq, steal
    return (sum(fields[0:3]) + sum(fields[5:8])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """CPU seconds of this process's finished children (the controller: ansible-playbook, its forks)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(runs: int, settle: Callable[[], None], log: Callable[[str], None], keep: bool) -> dict[str, float]:
    """Seconds of each timed run: `noop_1`, `noop_3`, `noop_5`, Ansible's `floor_1` and `floor_5`
    (medians of `runs`), `changed_5`, `restore_5`; for the no-change and floor runs, the CPU seconds
    they cost the machine (`cpu_noop_1`...) and the controller (`ctl_noop_1`...), medians too."""
    results: dict[str, float] = {"runs": runs, "cores": os.cpu_count() or 1}
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as ephemeral:
        env = {**os.environ, "MOLECULE_EPHEMERAL_DIRECTORY": ephemeral, "ANSIBLE_NOCOLOR": "1"}
        inventory = str(Path(ephemeral) / "inventory/ansible_inventory.yml")
        try:
            log("cluster: molecule create, prepare, converge -s cluster (not timed)")
            for action in ("create", "prepare", "converge"):
                sh("molecule", action, "-s", SCENARIO, env=env)

            cpu: dict[str, float] = {}  # the last timed run's CPU seconds: machine, controller

            def timed_play(playbook: str, *args: str) -> tuple[float, str]:
                settle()
                machine, controller, start = busy_cpu(), children_cpu(), time.perf_counter()
                out = sh("ansible-playbook", "-i", inventory, playbook, *args, env=env)
                seconds = time.perf_counter() - start
                cpu.update(machine=busy_cpu() - machine, controller=children_cpu() - controller)
                return seconds, out

            def keep_cpu(key: str, samples: list[dict[str, float]]) -> None:
                results[f"cpu_{key}"] = statistics.median(sample["machine"] for sample in samples)
                results[f"ctl_{key}"] = statistics.median(sample["controller"] for sample in samples)

            def timed(*args: str) -> tuple[float, str]:
                return timed_play("playbooks/site.yml", *args)

            for size, hosts in SUBSETS.items():
                log(f"cluster: no-change run on {size} host(s) x{runs}")
                limit = ["--limit", ",".join(hosts)] if hosts else []
                times, samples = [], []
                for _ in range(runs):
                    seconds, out = timed(*limit)
                    samples.append(dict(cpu))
                    counts = {host: counters["changed"] for host, counters in recaps(out).items()}
                    if any(counts.values()) or (hosts and sorted(counts) != sorted(hosts)):
                        sys.exit(f"bench: not a no-change run on {hosts or 'all'}: {counts}\n{out[-3000:]}")
                    times.append(seconds)
                results[f"noop_{size}"] = statistics.median(times)
                keep_cpu(f"noop_{size}", samples)
            # Ansible's floor on the same hosts: what no role can go below as hosts are added.
            floor = Path(ephemeral) / "floor.yml"
            floor.write_text(FLOOR)
            for size, hosts in ((1, SUBSETS[1]), (5, [])):
                log(f"cluster: Ansible's floor on {size} host(s) x{runs}")
                limit = ["--limit", ",".join(hosts)] if hosts else []
                times, samples = [], []
                for _ in range(runs):
                    times.append(timed_play(str(floor), *limit)[0])
                    samples.append(dict(cpu))
                results[f"floor_{size}"] = statistics.median(times)
                keep_cpu(f"floor_{size}", samples)
            for key, extra in (("changed_5", ["-e", CHANGED]), ("restore_5", [])):
                log(f"cluster: {key.replace('_5', '')} run on 5 hosts")
                results[key], out = timed(*extra)
                if not recaps(out).get("dhis-cl-sync", {}).get("changed"):
                    sys.exit(f"bench: the {key} run changed nothing on dhis-cl-sync\n{out[-3000:]}")
        finally:
            if not keep:
                subprocess.run(["molecule", "destroy", "-s", SCENARIO], capture_output=True, env=env, cwd=ROOT)
    return results
