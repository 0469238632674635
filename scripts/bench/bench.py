"""make bench: the role against the guide's own setup, on fresh local containers.

Two systemd containers from the local Debian 12 image get the example project in threads mode
(molecule/shared/prepare.yml). Then, one after the other: playbooks/site.yml on the first, the
guide's steps (scripts/bench/guide.sh) on the second; a no-change re-run of site.yml; on the
role's host, end-to-end throughput (tasks sent from Django, all results awaited) of a worker
started by hand as the guide starts it, of the role's default worker and of the tuned `sync`
worker layouts; the health check's round trip; then the cluster section (scripts/bench/cluster.py).
Prints a markdown table and rewrites the measured part of docs/PERFORMANCE.md and docs/performance.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cluster
from common import FLOOR, recaps, sh

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "dhis-celery/debian:bookworm"
ROLE_HOST, GUIDE_HOST = "dhis-bench-role", "dhis-bench-guide"
CA_FILE = "/etc/ssl/certs/ca-certificates.crt"
# The health gate's task (tasks/gate.yml), as profile_tasks names it in its recap.
GATE_TASK = "Gate | Restart what changed, then prove that every unit runs"
TASKS = "dhis_app.services.auto_sync.celery_tasks"
# The role's default worker, and the variants tried: its log level, its task events (Flower's
# feed), and the layouts for the I/O-bound sync queue. Each is a set of extra variables.
DEFAULT_WORKERS = [{"name": "default", "queues": ["celery", "sync", "monitor"], "concurrency": 2, "pool": "prefork"}]


def sync_layout(pool: str, concurrency: int, **worker: object) -> dict:
    """The default worker without the sync queue, and a worker of its own for it."""
    return {
        "dhis_celery_workers": [
            {"name": "default", "queues": ["celery", "monitor"], "concurrency": 2, "pool": "prefork"},
            {"name": "sync", "queues": ["sync"], "concurrency": concurrency, "pool": pool, **worker},
        ]
    }


TUNED: dict[str, dict] = (
    {
        # The default worker without its per-task log lines in the journal (what they cost).
        "role default, loglevel: warning": {"dhis_celery_workers": [{**DEFAULT_WORKERS[0], "loglevel": "warning"}]},
        # No task events: nothing for the workers to publish, nothing for Flower to digest (what they cost).
        "role default, task events off": {"dhis_celery_workers": DEFAULT_WORKERS, "dhis_celery_task_events": False},
    }
    | {
        # Each with the role's defaults (gevent: 2 messages per slot on Redis).
        f"sync: {pool} x{concurrency}" + (" (inventories' layout)" if (pool, concurrency) == ("threads", 16) else ""): (
            sync_layout(pool, concurrency)
        )
        for pool, concurrency in (
            ("prefork", 8),
            ("threads", 12),
            ("threads", 16),
            ("threads", 32),
            ("gevent", 16),
            ("gevent", 32),
        )
    }
    | {
        # What the default prefetch of 2 buys a gevent worker: with 1 it waits on Redis after each batch.
        "sync: gevent x16, prefetch multiplier 1": sync_layout("gevent", 16, prefetch_multiplier=1),
    }
)

# Runs inside the role's host with the role's settings: `dhis-celery python -c LOAD ARGS`.
LOAD = f"""
import json, statistics, sys, time
import django
django.setup()
from celery.result import ResultSet
from {TASKS} import celery_health_check, celery_wait

kind, queue, n, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
if kind == "throughput":
    ResultSet([celery_wait.apply_async((seconds,), queue=queue) for _ in range(20)]).join_native(timeout=120)
    start = time.perf_counter()
    ResultSet([celery_wait.apply_async((seconds,), queue=queue) for _ in range(n)]).join_native(timeout=900)
    print(json.dumps({{"per_second": n / (time.perf_counter() - start)}}))
else:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        celery_health_check.apply_async(queue=queue).get(timeout=60)
        times.append(time.perf_counter() - start)
    cuts = statistics.quantiles(times, n=20)
    print(json.dumps({{"p50_ms": 1000 * statistics.median(times), "p95_ms": 1000 * cuts[18]}}))
"""


@dataclass
class Results:
    converge: dict[str, float] = field(default_factory=dict)
    rerun: dict[str, int] = field(default_factory=dict)
    throughput: dict[str, dict[str, float]] = field(default_factory=dict)
    round_trip: dict[str, dict[str, float]] = field(default_factory=dict)
    concurrency: dict[str, int] = field(default_factory=dict)
    cluster: dict[str, float] = field(default_factory=dict)  # scripts/bench/cluster.py
    rounds: dict[str, list[float]] = field(default_factory=dict)  # role / guide, per paired round
    profile: dict[str, dict[str, float]] = field(default_factory=dict)  # CPU ms per no-op task
    rerun_measured: dict[str, object] = field(default_factory=dict)  # set by --only-rerun: its own run
    tuned_measured: dict[str, object] = field(default_factory=dict)  # set by --only-tuned: its own run
    first_runs: dict[str, list[float]] = field(default_factory=dict)  # first converge, per round: role, guide
    first_tasks: dict[str, float] = field(default_factory=dict)  # the role's slowest tasks, its median round
    first_measured: dict[str, object] = field(default_factory=dict)  # set by --only-first: its own run


def log(message: str) -> None:
    print(f"== {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def fresh_container(name: str) -> None:
    sh("docker", "rm", "-f", name, check=False)
    sh(
        "docker", "run", "-d", "--name", name, "--hostname", name,
        "--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
        "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock",
        IMAGE, "/lib/systemd/systemd",
    )  # fmt: skip


def inventory(directory: Path, guide: bool = True) -> Path:
    """The two hosts (the role's alone without `guide`); the role's variables as the demo
    inventory sets them, with test secrets."""
    hosts = {
        "all": {
            "vars": {
                "ansible_connection": "docker",
                "ansible_python_interpreter": "/usr/bin/python3",
                "dhis_sync_pip_args": f"--cert {CA_FILE}",
                "dhis_celery_app_dir": "/srv/dhis_sync",
                "dhis_celery_venv_dir": "/srv/dhis_sync/venv",
                "dhis_celery_django_service": "dhis-sync-web.service",
                "dhis_celery_environment_files": ["/etc/dhis_sync/dhis_sync.env"],
                "dhis_celery_writable_paths": ["/srv/dhis_sync/data"],
                "dhis_celery_pip_ca_file": CA_FILE,
                "dhis_celery_redis_password": "bench-app-password-0123456789",
                "dhis_celery_redis_admin_password": "bench-admin-password-0123456789",
                "dhis_celery_flower_users": [{"name": "ops", "password": "bench-flower-password"}],
            }
        },
        "dhis_celery": {"hosts": {ROLE_HOST: {}}},
        "bench_guide": {"hosts": {GUIDE_HOST: {}} if guide else {}},
    }
    path = directory / "hosts.json"
    path.write_text(json.dumps(hosts))
    return path


def playbook(hosts: Path, name: str, *args: str, env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    out = sh("ansible-playbook", "-i", str(hosts), str(ROOT / name), *args, env=env)
    return time.perf_counter() - start, out


def recap(out: str, host: str) -> dict[str, int]:
    counters = recaps(out).get(host)
    assert counters, f"no recap line for {host}"
    return counters


def load(kind: str, queue: str, n: int, seconds: float = 0.0) -> dict[str, float]:
    out = sh("docker", "exec", ROLE_HOST, "dhis-celery", "python", "-c", LOAD, kind, queue, str(n), str(seconds))
    return json.loads(out.strip().splitlines()[-1])


def extra_vars(directory: Path, variables: dict) -> str:
    """`-e @FILE` for these variables; each worker's loglevel is info unless it says otherwise."""
    path = directory / f"vars-{len(list(directory.iterdir()))}.json"
    workers = [{"loglevel": "info", **w} for w in variables["dhis_celery_workers"]]
    path.write_text(json.dumps({**variables, "dhis_celery_workers": workers}))
    return f"@{path}"


@dataclass
class Sizes:
    noop: int  # no-op tasks per throughput run
    io: int  # 100 ms tasks per throughput run
    runs: int  # throughput runs per figure; the median is kept


def measure_workers(results: Results, label: str, queue: str, concurrency: int, sizes: Sizes) -> None:
    settle()
    log(f"throughput: {label}")

    noop = []
    for _ in range(sizes.runs):
        rate, results.profile[label] = profiled_noop(queue, sizes.noop)
        noop.append(rate)
    io = [load("throughput", queue, sizes.io, 0.1)["per_second"] for _ in range(sizes.runs)]
    results.concurrency[label] = concurrency
    results.throughput[label] = {"noop": statistics.median(noop), "io": statistics.median(io)}


GUIDE, DEFAULT = "guide's worker (hand-started, defaults)", "role default: prefork x2"
# The role's default measured again beside the tuned layouts when they are measured alone: the
# machine's speed differs between runs, so they compare with this row, not with the paired one.
REFERENCE = "role default: prefork x2, measured with the tuned layouts"
HAND_PIDFILE = "/tmp/bench-guide-worker.pid"
# CPU time of the host's processes, summed by what they are (a process's cmdline, first match).
GROUPS = (
    ("worker", " worker "),
    ("Flower", " flower "),
    ("Beat", " beat "),
    ("Redis", "redis-server"),
    ("journald", "systemd-journald"),
)
SNAPSHOT = r"""for p in /proc/[0-9]*; do
  s=$(cat $p/stat 2>/dev/null) && c=$(tr '\0' ' ' < $p/cmdline 2>/dev/null) &&
  echo "${p#/proc/} $(echo "$s" | sed 's/.*) //' | cut -d' ' -f12,13) $c"
done"""


def cpu_ticks() -> dict[str, int]:
    """utime + stime (clock ticks) of every process on the role's host, by pid and group."""
    ticks: dict[str, int] = {}
    for line in sh("docker", "exec", ROLE_HOST, "sh", "-c", SNAPSHOT).splitlines():
        pid, utime, stime, *cmd = [*line.split(" "), "", ""]
        if not (utime.isdigit() and stime.isdigit()):
            continue  # a process that ended while it was read
        group = next((name for name, mark in GROUPS if mark in f" {' '.join(cmd)} "), "other")
        ticks[f"{group}:{pid}"] = int(utime) + int(stime)
    return ticks


def profiled_noop(queue: str, n: int) -> tuple[float, dict[str, float]]:
    """One no-op throughput run and the CPU its host's processes spent per task (ms), by group.
    The sending client exits before the second reading: its share is not in the profile."""
    hz = int(sh("docker", "exec", ROLE_HOST, "getconf", "CLK_TCK").strip())
    before = cpu_ticks()
    rate = load("throughput", queue, n)["per_second"]
    after = cpu_ticks()
    profile: dict[str, float] = {}
    for key, value in after.items():
        group = key.split(":", 1)[0]
        profile[group] = profile.get(group, 0.0) + (value - before.get(key, 0)) * 1000 / hz / (n + 20)
    return rate, profile


def hand_worker(start: bool) -> None:
    """`celery -A dhis_sync worker --loglevel=info` by hand on the role's host, the role's worker
    units stopped while it runs; its log goes to a file, as it would to a terminal."""
    if start:
        sh("docker", "exec", ROLE_HOST, "systemctl", "stop", "celery-worker@*")
        worker = (
            f"exec dhis-celery celery worker --loglevel=info --pidfile={HAND_PIDFILE} >/tmp/bench-guide-worker.log 2>&1"
        )
        sh("docker", "exec", "-d", ROLE_HOST, "sh", "-c", worker)
    else:
        stop = f"kill -TERM $(cat {HAND_PIDFILE}); while [ -e {HAND_PIDFILE} ]; do sleep 0.5; done"
        sh("docker", "exec", ROLE_HOST, "sh", "-c", stop)
        sh("docker", "exec", ROLE_HOST, "systemctl", "reset-failed")
        sh("docker", "exec", ROLE_HOST, "systemctl", "start", "celery.target")
    # A ping broadcast before a worker listens is lost: ask again until one answers.
    ping = "for i in $(seq 30); do dhis-celery celery inspect ping --timeout 2 >/dev/null 2>&1 && exit 0; done; exit 1"
    sh("docker", "exec", ROLE_HOST, "sh", "-c", ping)


def paired(results: Results, sizes: Sizes, n_calls: int) -> None:
    """The guide's worker and the role's default worker in turns, one run each per round: a drift
    of the machine's speed weighs on both alike, and each round gives its own ratio."""
    cpus = int(sh("docker", "exec", ROLE_HOST, "nproc").strip())
    runs: dict[str, dict[str, list[float]]] = {GUIDE: {"noop": [], "io": []}, DEFAULT: {"noop": [], "io": []}}
    for turn in range(sizes.runs):
        for label, queue in ((GUIDE, "celery"), (DEFAULT, "sync")):
            if label == GUIDE:
                hand_worker(start=True)
            settle()
            log(f"throughput, round {turn + 1} of {sizes.runs}: {label}")
            rate, profile = profiled_noop(queue, sizes.noop)
            runs[label]["noop"].append(rate)
            results.profile[label] = profile
            runs[label]["io"].append(load("throughput", queue, sizes.io, 0.1)["per_second"])
            if turn == sizes.runs - 1:
                results.round_trip["guide's worker" if label == GUIDE else "role"] = load(
                    "round_trip", "celery", n_calls
                )
            if label == GUIDE:
                hand_worker(start=False)
    for label, concurrency in ((GUIDE, cpus), (DEFAULT, 2)):
        results.concurrency[label] = concurrency
        results.throughput[label] = {kind: statistics.median(values) for kind, values in runs[label].items()}
    results.rounds = {
        kind: [r / g for g, r in zip(runs[GUIDE][kind], runs[DEFAULT][kind], strict=True)] for kind in ("noop", "io")
    }


def settle(limit: float = 90.0) -> None:
    """Wait (at most `limit` s) until the machine's CPUs are 90 % idle over 2 s: the services a
    converge has just (re)started boot for a few seconds and would be timed with the next run."""

    def cpu() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, all

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        (idle0, all0), _, (idle1, all1) = cpu(), time.sleep(2), cpu()
        if (idle1 - idle0) >= 0.9 * (all1 - all0):
            return
    log(f"settle: CPUs still busy after {limit:.0f} s, timing anyway")


def task_times(out: str) -> dict[str, float]:
    """Each task's seconds from profile_tasks' recap (ansible.cfg enables it), slowest first."""
    recap = out.split("TASKS RECAP", 1)[-1]
    return {name: float(seconds) for name, seconds in re.findall(r"^(\S.*?) -+ ([0-9.]+)s$", recap, re.M)}


def median_round(seconds: list[float]) -> int:
    """The index of the median round (the upper of the two middle ones for an even count)."""
    return sorted(range(len(seconds)), key=seconds.__getitem__)[len(seconds) // 2]


def guide_steps() -> float:
    """The guide's steps on its container (scripts/bench/guide.sh), timed."""
    start = time.perf_counter()
    guide = (ROOT / "scripts/bench/guide.sh").read_text()
    said = sh("docker", "exec", "-i", "-e", f"PIP_CERT={CA_FILE}", GUIDE_HOST, "bash", "-s", stdin=guide)
    for line in said.splitlines():
        log(line)  # the restarts the guide's worker needed, if any
    return time.perf_counter() - start


def first_converge(results: Results, hosts: Path, rounds: int) -> None:
    """The role's and the guide's first converge, each round on a fresh pair of containers with
    the example app deployed (not timed): the medians are the figures, and the role's slowest
    tasks come from its median round. The last round's containers stay for what follows."""
    role, guide, tasks = [], [], []
    for number in range(1, rounds + 1):
        log(f"first converge, round {number} of {rounds}: fresh containers, the example app deployed (not timed)")
        for name in (ROLE_HOST, GUIDE_HOST):
            fresh_container(name)
        playbook(hosts, "molecule/shared/prepare.yml", "-e", "dhis_sync_hosts_group=all")
        settle()
        log("first converge: playbooks/site.yml")
        seconds, out = playbook(hosts, "playbooks/site.yml", env={"PROFILE_TASKS_TASK_OUTPUT_LIMIT": "200"})
        role.append(seconds)
        tasks.append(task_times(out))
        settle()
        log("first converge: the guide's steps")
        guide.append(guide_steps())
    results.converge["role"], results.converge["guide"] = statistics.median(role), statistics.median(guide)
    results.first_runs = {"role": role, "guide": guide}
    results.first_tasks = tasks[median_round(role)]


def rerun(results: Results, hosts: Path, runs: int) -> None:
    """The no-change re-run, through Mitogen (ansible.cfg) and with Ansible's plain linear
    strategy: the median of `runs` each, every run on a settled machine."""
    variants: tuple[tuple[str, str, dict[str, str] | None, tuple[str, ...]], ...] = (
        ("rerun", "", None, ()),
        ("rerun_linear", ", Mitogen off (Ansible's plain linear strategy)", {"ANSIBLE_STRATEGY": "linear"}, ()),
        ("rerun_full", ", fast path off (every task)", None, ("-e", "dhis_celery_fast_path=false")),
    )
    for key, label, env, extra in variants:
        log(f"no-change re-run x{runs}{label}")
        times, gates = [], []
        for _ in range(runs):
            settle()
            seconds, out = playbook(hosts, "playbooks/site.yml", *extra, env=env)
            times.append(seconds)
            # The health gate's own time, from profile_tasks' recap (ansible.cfg enables it).
            gates += [t for name, t in task_times(out).items() if GATE_TASK in name]
            counts = recap(out, ROLE_HOST)
            if counts.get("changed", 0):
                sys.exit(f"bench: the re-run changed {counts['changed']} task(s): not a no-change run\n{out[-3000:]}")
        results.converge[key] = statistics.median(times)
        if gates:
            results.converge[key + "_gate"] = statistics.median(gates)
        if key == "rerun":
            results.rerun = counts


def floor(results: Results, directory: Path, hosts: Path, runs: int) -> None:
    """What any play costs on this host through the same strategy: the median of `runs`."""
    log(f"Ansible's floor x{runs}")
    path = directory / "floor.yml"
    path.write_text(FLOOR)
    times = []
    for _ in range(runs):
        settle()
        start = time.perf_counter()
        sh("ansible-playbook", "-i", str(hosts), str(path))
        times.append(time.perf_counter() - start)
    results.converge["floor"] = statistics.median(times)


# The figures the issues set as targets, each computed from the saved results.
INVENTORIES_LAYOUT = "sync: threads x16 (inventories' layout)"


def targets(results: Results) -> list[tuple[str, str, str, bool]]:
    """(target, measured, the bar, met) for each target the results can answer."""
    c, t = results.converge, results.throughput
    guide = t.get(GUIDE, {})
    rows = []
    if "floor" in c:
        ratio = c["rerun"] / c["floor"]
        rows.append(
            (
                "No-change re-run / Ansible's floor",
                f"{c['rerun']:.1f} s / {c['floor']:.1f} s = {ratio:.2f}",
                "≤ 2.5",
                ratio <= 2.5,
            )
        )
    ratio = c["role"] / c["guide"]
    rows.append(
        (
            "First converge / the guide's literal steps",
            f"{c['role']:.1f} s / {c['guide']:.1f} s = {ratio:.2f}",
            "≤ 0.8",
            ratio <= 0.8,
        )
    )
    if results.rounds:
        ratio = statistics.median(results.rounds["noop"])
        spread = ", ".join(f"{r:.2f}" for r in results.rounds["noop"])
        rows.append(
            (
                "No-op tasks/s, role default / guide's worker (median of the paired rounds)",
                f"{ratio:.2f} (rounds: {spread})",
                "≥ 1.0",
                ratio >= 1.0,
            )
        )
    elif guide and DEFAULT in t:
        ratio = t[DEFAULT]["noop"] / guide["noop"]
        rows.append(("No-op tasks/s, role default / guide's worker", f"{ratio:.2f}", "≥ 1.0", ratio >= 1.0))
    if results.cluster:
        ratio = results.cluster["noop_5"] / results.cluster["noop_1"]
        measured = f"{ratio:.2f}"
        if "floor_5" in results.cluster:
            bound = results.cluster["floor_5"] / results.cluster["floor_1"]
            measured += f" (Ansible's floor on the same hosts: {bound:.2f})"
        if "cpu_noop_5" in results.cluster:
            k = results.cluster
            busy = k["cpu_noop_5"] / (k["noop_5"] * k["cores"])
            measured += f"; the 5-host run kept the {k['cores']:.0f} cores {busy:.0%} busy"
        rows.append(("No-change run, 5 hosts / 1 host (cluster scenario)", measured, "≤ 1.5", ratio <= 1.5))
    if INVENTORIES_LAYOUT in t:
        share = t[INVENTORIES_LAYOUT]["io"] / (results.concurrency[INVENTORIES_LAYOUT] / 0.1)
        rows.append(
            ("100 ms I/O tasks, inventories' layout, share of its bound", f"{share:.0%}", "≥ 90 %", share >= 0.9)
        )
    return rows


def targets_table(results: Results) -> str:
    rows = targets(results)
    met = sum(row[3] for row in rows)
    lines = [
        f"Targets (issues #7 and #21): {met} of {len(rows)} met in this run.",
        "",
        "| Target | Measured | Bar | Met |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {value} | {bar} | {'yes' if ok else 'no'} |" for name, value, bar, ok in rows]
    return "\n".join(lines)


def first_label(results: Results) -> str:
    """How the first converge's figures were taken: one run (older results) or the median of rounds."""
    if not results.first_runs:
        return ""
    f = results.first_measured
    pairs = zip(results.first_runs["role"], results.first_runs["guide"], strict=True)
    runs = ", ".join(f"{role:.1f} / {guide:.1f}" for role, guide in pairs)
    own_run = f", measured {f['measured_at']} with `{f['command']}`" if f else ""
    return f", median of {len(results.first_runs['role'])} rounds (role / guide: {runs}){own_run}"


def first_tasks_table(results: Results, shown: int = 12) -> str:
    """The role's slowest tasks in its median first converge, the rest summed, and what
    ansible-playbook spent outside any task (start, inventory, plugins)."""
    if not results.first_tasks:
        return ""
    tasks = sorted(results.first_tasks.items(), key=lambda item: -item[1])
    total = results.first_runs["role"][median_round(results.first_runs["role"])]
    rest = sum(seconds for _, seconds in tasks[shown:])
    rows = [
        "\nWhere the role's first converge goes (its median round, from `profile_tasks`; "
        "the guide's steps have no health gate, no check and no settle time):\n",
        "| Task | s | share |",
        "|---|---|---|",
    ]
    for name, seconds in tasks[:shown]:
        cell = name.removeprefix("dhis_celery : ").replace("|", "\\|")
        rows.append(f"| {cell} | {seconds:.2f} | {seconds / total:.0%} |")
    rows.append(f"| the {len(tasks) - shown} other tasks | {rest:.2f} | {rest / total:.0%} |")
    outside = total - sum(seconds for _, seconds in tasks)
    rows.append(f"| outside any task (start, inventory, plugins) | {outside:.2f} | {outside / total:.0%} |")
    return "\n".join(rows)


def table(results: Results, runs: int) -> str:
    c = results.converge
    m = results.rerun_measured
    own_run = f", measured {m['measured_at']} with `{m['command']}`" if m else ""
    same_run = ", same run" if m else ""
    runs = int(m.get("runs", runs)) if m else runs
    rows = [
        "| Measure | Guide | Role | Ratio (role / guide) |",
        "|---|---|---|---|",
        f"| First converge on a fresh host{first_label(results)} (s) "
        f"| {c['guide']:.1f} | {c['role']:.1f} | {c['role'] / c['guide']:.2f} |",
        f"| No-change re-run of site.yml, median of {runs}{own_run} (s) | | {c['rerun']:.1f} "
        f"({results.rerun.get('ok', 0)} tasks run, {results.rerun.get('skipped', 0)} skipped, "
        f"{results.rerun.get('changed', 0)} changed) | |",
        f"| The same re-run, fast path off (`-e dhis_celery_fast_path=false`: every task), median of {runs}"
        f"{same_run} (s) | | {c.get('rerun_full', float('nan')):.1f} | |",
        f"| The same re-run, Mitogen off (`ANSIBLE_STRATEGY=linear`), median of {runs}{same_run} (s) "
        f"| | {c['rerun_linear']:.1f} | |",
        f"| Ansible's floor: minimal facts and a ping, same strategy, median of {runs}{same_run} (s) "
        f"| | {c.get('floor', float('nan')):.1f} | |",
        f"| Health gate within the no-change re-run, median of {runs}{same_run} (s) "
        f"| | {c.get('rerun_gate', float('nan')):.2f} | |",
    ]
    guide_label = next(iter(results.throughput))
    guide = results.throughput[guide_label]
    for label, values in results.throughput.items():
        if label == guide_label:
            continue
        bound = results.concurrency[label] / 0.1
        noop = values["noop"]
        rows.append(f"| No-op tasks/s, {label} | {guide['noop']:.0f} | {noop:.0f} | {noop / guide['noop']:.2f} |")
        rows.append(
            f"| 100 ms I/O tasks/s, {label} (bound {bound:.0f}/s: {values['io'] / bound:.0%}) "
            f"| {guide['io']:.1f} | {values['io']:.1f} | {values['io'] / guide['io']:.2f} |"
        )
    if results.cluster:
        k = results.cluster
        rows.append(
            "| No-change run of site.yml on 1 / 3 / 5 hosts of the cluster scenario, "
            f"median of {k.get('runs', 1):.0f}"
            + (f", measured {k['measured_at']} with `{k['command']}`" if "measured_at" in k else "")
            + " (s) "
            f"| | {k['noop_1']:.1f} / {k['noop_3']:.1f} / {k['noop_5']:.1f} | |"
        )
        if "floor_5" in k:
            rows.append(
                f"| Ansible's floor (minimal facts, a ping) on 1 / 5 of the same hosts (s) "
                f"| | {k['floor_1']:.1f} / {k['floor_5']:.1f} | |"
            )
        if "cpu_noop_5" in k:
            for run, name in (("noop", "the no-change run"), ("floor", "Ansible's floor")):
                rows.append(
                    f"| CPU of {name} on 1 / 5 hosts: the machine's ({k['cores']:.0f} cores: the containers and "
                    f"the controller), of which the controller's (CPU s) | | {k[f'cpu_{run}_1']:.1f} / "
                    f"{k[f'cpu_{run}_5']:.1f}, of which {k[f'ctl_{run}_1']:.1f} / {k[f'ctl_{run}_5']:.1f} | |"
                )
        rows.append(f"| Run on the 5 hosts that changes a worker setting (s) | | {k['changed_5']:.1f} | |")
        rows.append(f"| The run that changes it back (s) | | {k['restore_5']:.1f} | |")
    g, r = results.round_trip["guide's worker"], results.round_trip["role"]
    for key, name in (("p50_ms", "p50"), ("p95_ms", "p95")):
        rows.append(f"| Health-check round trip {name} (ms) | {g[key]:.1f} | {r[key]:.1f} | {r[key] / g[key]:.2f} |")
    rows.append(
        f"\nThe guide's hand-started worker runs prefork with {results.concurrency[guide_label]} processes "
        "(Celery's default: one per core)."
    )
    if results.tuned_measured:
        t = results.tuned_measured
        rows.append(
            f"The rows after the role default's (the tuned layouts) were measured {t['measured_at']} with "
            f"`{t['command']}`, on a fresh host of their own, median of {t['runs']}; their ratios compare them "
            "with the guide's worker of the main run"
            + (
                f", so compare them with each other and with the row `{REFERENCE}`, from their own run."
                if REFERENCE in results.throughput
                else "."
            )
        )
    if results.first_tasks:
        rows.append(first_tasks_table(results))
    if results.profile:
        groups = [name for name, _ in GROUPS] + ["other"]
        rows += [
            "\nWhere a no-op task's CPU goes on the host (ms per task, from /proc during each worker's last no-op "
            "run; the sending client is not counted):\n",
            "| Worker | " + " | ".join(groups) + " | total |",
            "|---" * (len(groups) + 2) + "|",
        ]
        for label, profile in results.profile.items():
            cells = " | ".join(f"{profile.get(group, 0.0):.2f}" for group in groups)
            rows.append(f"| {label} | {cells} | {sum(profile.values()):.2f} |")
    return "\n".join(rows)


def plot(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    c = results.converge
    bars = {
        "guide's steps": c["guide"],
        "role:\nfirst converge": c["role"],
        "role:\nno-change re-run": c["rerun"],
        "same re-run,\nfast path off": c.get("rerun_full", float("nan")),
        "same re-run,\nMitogen off": c["rerun_linear"],
    }
    left.bar(list(bars), list(bars.values()))
    left.set_ylabel("seconds")
    left.tick_params(axis="x", labelsize=8)
    left.set_title("Converge time (fresh Debian 12 container)")
    labels = list(results.throughput)
    io = [results.throughput[label]["io"] for label in labels]
    right.barh([label.replace(" (hand-started, defaults)", "") for label in labels], io)
    right.set_xlabel("100 ms I/O-bound tasks per second")
    right.set_title("End-to-end throughput")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


SAVED = ROOT / "docs/performance.json"


def save(results: Results, runs: int, command: str) -> None:
    """The raw figures the report and the plot are drawn from (`--from-saved` redraws them)."""
    meta = {"measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": command, "runs": runs}
    SAVED.write_text(json.dumps({**meta, "cores": os.cpu_count(), "results": asdict(results)}, indent=2) + "\n")


def write_report() -> None:
    saved = json.loads(SAVED.read_text())
    results = Results(**saved["results"])
    doc = ROOT / "docs/PERFORMANCE.md"
    doc.write_text(re.sub(r"<!-- bench:begin -->.*<!-- bench:end -->", render(saved), doc.read_text(), flags=re.S))
    readme = ROOT / "README.md"
    readme.write_text(
        re.sub(
            r"<!-- bench-summary:begin -->.*<!-- bench-summary:end -->", summary(saved), readme.read_text(), flags=re.S
        )
    )
    plot(results, ROOT / "docs/performance.png")


def render(saved: dict) -> str:
    """docs/PERFORMANCE.md's measured part, from the saved results alone."""
    results = Results(**saved["results"])
    return (
        f"<!-- bench:begin -->\nMeasured {saved['measured_at']} with `{saved['command']}` on this machine "
        f"({saved['cores']} cores); raw figures in `docs/performance.json`, from which this table, the targets "
        f"and the plot are drawn:\n\n{table(results, saved['runs'])}\n\n{targets_table(results)}\n\n"
        "![](performance.png)\n<!-- bench:end -->"
    )


def summary(saved: dict) -> str:
    """The README's lines on performance, from the saved results alone."""
    results = Results(**saved["results"])
    rows = "; ".join(
        f"{name}: {value} (bar {bar}, {'met' if ok else 'missed'})" for name, value, bar, ok in targets(results)
    )
    later = [
        f"{what} from {m['measured_at']}, `{m['command']}`"
        for what, m in (
            ("the first converge", results.first_measured),
            ("the re-run and the floor", results.rerun_measured),
            ("the tuned layouts", results.tuned_measured),
            ("the cluster", results.cluster),
        )
        if m and "measured_at" in m
    ]
    return (
        f"<!-- bench-summary:begin -->\nLast run ({saved['measured_at']}, `{saved['command']}`, "
        f"{saved['cores']} cores{''.join('; ' + w for w in later)}): {rows}.\n<!-- bench-summary:end -->"
    )


def stamp(args: argparse.Namespace) -> dict[str, object]:
    """When and with which command a part measured alone was measured."""
    return {
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": f'make bench BENCH_ARGS="{shlex.join(sys.argv[1:])}"',
        "runs": args.runs,
    }


@contextlib.contextmanager
def fresh_role_host(keep: bool) -> Iterator[tuple[Path, Path]]:
    """The role's host alone, fresh, with the example app deployed (not timed): (directory, inventory)."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        hosts = inventory(directory, guide=False)
        log("a fresh container, the example app deployed (not timed)")
        fresh_container(ROLE_HOST)
        playbook(hosts, "molecule/shared/prepare.yml", "-e", "dhis_sync_hosts_group=all")
        yield directory, hosts
    if not keep:
        sh("docker", "rm", "-f", ROLE_HOST, check=False)


def save_part(saved: dict) -> None:
    SAVED.write_text(json.dumps(saved, indent=2) + "\n")
    write_report()


def measure_cluster_alone(args: argparse.Namespace) -> None:
    """The cluster section measured again into the saved results; the rest keeps its own run,
    and the cluster's figures name the run they come from."""
    saved = json.loads(SAVED.read_text())
    figures: dict[str, object] = dict(cluster.measure(args.cluster_runs, settle, log, args.keep))
    figures.update({k: v for k, v in stamp(args).items() if k != "runs"})
    print(json.dumps(figures, indent=2))
    if not args.no_report:
        saved["results"]["cluster"] = figures
        save_part(saved)


def measure_rerun_alone(args: argparse.Namespace) -> None:
    """The no-change re-run and Ansible's floor measured again, in one run, into the saved
    results (their ratio is a target); the rest keeps its own run, and these rows name theirs."""
    saved = json.loads(SAVED.read_text())
    results = Results()
    with fresh_role_host(args.keep) as (directory, hosts):
        playbook(hosts, "playbooks/site.yml")  # the first converge, not timed
        rerun(results, hosts, args.runs)
        floor(results, directory, hosts, args.runs)
    keys = ("rerun", "rerun_gate", "rerun_full", "rerun_full_gate", "rerun_linear", "rerun_linear_gate", "floor")
    figures = {key: results.converge[key] for key in keys if key in results.converge}
    print(json.dumps({**figures, "rerun_counts": results.rerun}, indent=2))
    if not args.no_report:
        saved["results"]["converge"].update(figures)
        saved["results"]["rerun"] = results.rerun
        saved["results"]["rerun_measured"] = stamp(args)
        save_part(saved)


def measure_tuned_alone(args: argparse.Namespace) -> None:
    """The tuned worker layouts measured again into the saved results, on a fresh host of their
    own; the guide's worker and the role's default keep their paired run, and these rows name theirs."""
    saved = json.loads(SAVED.read_text())
    results = Results()
    sizes = Sizes(args.noop_tasks, args.io_tasks, args.runs)
    with fresh_role_host(args.keep) as (directory, hosts):
        playbook(hosts, "playbooks/site.yml", "-e", extra_vars(directory, {"dhis_celery_workers": DEFAULT_WORKERS}))
        measure_workers(results, REFERENCE, "sync", DEFAULT_WORKERS[0]["concurrency"], sizes)
        measure_tuned(results, directory, hosts, sizes)
    print(json.dumps(results.throughput, indent=2))
    if not args.no_report:
        kept = {GUIDE, DEFAULT}
        for key in ("throughput", "concurrency", "profile"):
            rows = {k: v for k, v in saved["results"][key].items() if k in kept}
            saved["results"][key] = rows | getattr(results, key)
        saved["results"]["tuned_measured"] = stamp(args)
        save_part(saved)


def measure_first_alone(args: argparse.Namespace) -> None:
    """The first converge, the role's and the guide's, measured again into the saved results
    (their ratio is a target); the rest keeps its own run, and these rows name theirs."""
    saved = json.loads(SAVED.read_text())
    results = Results()
    with tempfile.TemporaryDirectory() as tmp:
        first_converge(results, inventory(Path(tmp)), args.runs)
    if not args.keep:
        for name in (ROLE_HOST, GUIDE_HOST):
            sh("docker", "rm", "-f", name, check=False)
    print(json.dumps({"runs": results.first_runs, "role_tasks": results.first_tasks}, indent=2))
    if not args.no_report:
        saved["results"]["converge"].update({k: results.converge[k] for k in ("role", "guide")})
        saved["results"]["first_runs"] = results.first_runs
        saved["results"]["first_tasks"] = results.first_tasks
        saved["results"]["first_measured"] = stamp(args)
        save_part(saved)


def measure_tuned(results: Results, directory: Path, hosts: Path, sizes: Sizes) -> None:
    """Each tuned layout converged in turn and measured; the role's default layout restored."""
    for label, variables in TUNED.items():
        playbook(hosts, "playbooks/site.yml", "-e", extra_vars(directory, variables))
        measure_workers(results, label, "sync", variables["dhis_celery_workers"][-1]["concurrency"], sizes)
    playbook(hosts, "playbooks/site.yml", "-e", extra_vars(directory, {"dhis_celery_workers": DEFAULT_WORKERS}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noop-tasks", type=int, default=2000)
    parser.add_argument("--io-tasks", type=int, default=400)
    parser.add_argument("--runs", type=int, default=3, help="re-runs and throughput runs per figure (median kept)")
    parser.add_argument("--calls", type=int, default=200, help="health-check round trips")
    parser.add_argument("--keep", action="store_true", help="leave the containers running")
    parser.add_argument("--no-cluster", action="store_true", help="skip the cluster section (five more containers)")
    parser.add_argument("--cluster-runs", type=int, default=1, help="no-change runs per cluster size (median kept)")
    parser.add_argument(
        "--only-cluster", action="store_true", help="measure the cluster section alone; keep the other saved figures"
    )
    parser.add_argument(
        "--only-rerun",
        action="store_true",
        help="measure the no-change re-run and Ansible's floor alone; keep the other saved figures",
    )
    parser.add_argument(
        "--only-tuned",
        action="store_true",
        help="measure the tuned worker layouts alone; keep the other saved figures",
    )
    parser.add_argument(
        "--only-first",
        action="store_true",
        help="measure the first converge (the role's and the guide's) alone; keep the other saved figures",
    )
    parser.add_argument("--no-report", action="store_true", help="print only; leave docs/ alone")
    parser.add_argument("--from-saved", action="store_true", help="measure nothing: redraw from docs/performance.json")
    args = parser.parse_args()
    if args.from_saved:
        write_report()
        return
    if args.only_cluster:
        measure_cluster_alone(args)
        return
    if args.only_rerun:
        measure_rerun_alone(args)
        return
    if args.only_tuned:
        measure_tuned_alone(args)
        return
    if args.only_first:
        measure_first_alone(args)
        return
    results = Results()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        hosts = inventory(directory)
        first_converge(results, hosts, args.runs)
        sh("docker", "stop", GUIDE_HOST)  # its services would share the two cores with what follows
        rerun(results, hosts, args.runs)
        floor(results, directory, hosts, args.runs)

        sizes = Sizes(args.noop_tasks, args.io_tasks, args.runs)
        paired(results, sizes, args.calls)
        measure_tuned(results, directory, hosts, sizes)
    if not args.keep:  # before the cluster's five containers start
        for name in (ROLE_HOST, GUIDE_HOST):
            sh("docker", "rm", "-f", name, check=False)
    if not args.no_cluster:
        results.cluster = cluster.measure(args.cluster_runs, settle, log, args.keep)
    elif SAVED.exists():  # the cluster's figures keep their own run, which they name
        results.cluster = json.loads(SAVED.read_text())["results"].get("cluster", {})

    markdown = table(results, args.runs)
    print(markdown)
    if not args.no_report:
        given = shlex.join(sys.argv[1:])
        save(results, args.runs, f'make bench BENCH_ARGS="{given}"' if given else "make bench")
        write_report()


if __name__ == "__main__":
    main()
