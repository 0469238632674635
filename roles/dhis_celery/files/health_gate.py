"""The dhis_celery health gate: prove that what the role started runs, or say which unit does not.

Run by the role as root with the system Python in isolated mode, at the end of every converge:
    python3 -I -c "$(cat health_gate.py)" '{"units": [...], "workers": {...}, "cli": ..., ...}'
It passes when, within `timeout` seconds:
  - every unit is active and running, and has run for `settle` seconds without a restart
    (a unit between crash-loop restarts is "activating", and one that just came back has a
    recent start and a higher NRestarts: neither passes);
  - every worker instance answers ping and consumes exactly its queues (asked through the
    project's command, which runs as the application user);
  - Flower, when given, answers 401 without credentials.
It prints one JSON object: {"ok": bool, "problems": [...], "seconds": float}; each problem names
the unit and ends with the last error lines of its journal.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

# Asked through the project's command as the application user: one reply per worker, no longer.
PING = """
import json, socket, sys
from celery.app.utils import find_app
expected = json.loads(sys.argv[2])
app = find_app(sys.argv[1])
# Only this host's instances (units name them NAME@%H): other hosts share the broker.
destination = [f"{name}@{socket.gethostname()}" for name in expected]
inspect = app.control.inspect(timeout=float(sys.argv[3]), destination=destination, limit=len(destination))
replies = inspect.active_queues() or {}
print(json.dumps({name.split("@")[0]: sorted(q["name"] for q in queues) for name, queues in replies.items()}))
"""


def unit_states(units: list[str]) -> dict[str, dict[str, str]]:
    properties = "Id,ActiveState,SubState,NRestarts,ActiveEnterTimestampMonotonic"
    out = subprocess.run(
        ["systemctl", "show", "-p", properties, "--", *units], capture_output=True, text=True, check=False
    ).stdout
    states: dict[str, dict[str, str]] = {}
    for block in out.strip().split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" in fields:
            states[fields["Id"]] = fields
    return states


def journal_tail(unit: str, lines: int = 3) -> str:
    out = subprocess.run(
        ["journalctl", "--no-pager", "-q", "-o", "cat", "-n", "40", "-u", unit],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    errors = [line for line in out if any(word in line for word in ("Error", "error", "Exception", "Traceback"))]
    return " | ".join((errors or out)[-lines:]).strip()


def unit_problems(units: list[str], first: dict[str, dict[str, str]], settle: float) -> list[str]:
    now_us = time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6
    problems = []
    for unit, state in unit_states(units).items():
        active, sub = state.get("ActiveState"), state.get("SubState")
        restarts = int(state.get("NRestarts") or 0) - int(first.get(unit, {}).get("NRestarts") or 0)
        age = (now_us - int(state.get("ActiveEnterTimestampMonotonic") or 0)) / 1e6
        if active != "active" or sub != "running":
            problems.append(f"{unit}: {active} ({sub})")
        elif restarts > 0:
            problems.append(f"{unit}: restarted {restarts} time(s) during the check")
        elif age < settle:
            problems.append(f"{unit}: has run only {age:.1f} s (watching for {settle:.0f} s)")
    return problems


def worker_problems(cli: str, app: str, workers: dict[str, list[str]]) -> list[str]:
    if not workers:
        return []
    result = subprocess.run(
        [cli, "python", "-c", PING, app, json.dumps(workers), "2"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return [f"workers could not be asked: {(result.stderr.strip().splitlines() or ['?'])[-1]}"]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    problems = []
    for name, queues in workers.items():
        if name not in answers:
            problems.append(f"worker {name} does not answer ping")
        elif answers[name] != sorted(queues):
            problems.append(f"worker {name} consumes {answers[name]}, not {sorted(queues)}")
    return problems


def flower_problems(url: str) -> list[str]:
    if not url:
        return []
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return [f"Flower answered {response.status} without credentials, not 401"]
    except urllib.error.HTTPError as error:
        return [] if error.code == 401 else [f"Flower answered {error.code} without credentials, not 401"]
    except OSError as error:
        return [f"Flower does not answer at {url}: {error}"]


def gate(spec: dict) -> dict:
    started = time.monotonic()
    deadline = started + float(spec.get("timeout", 90))
    settle = float(spec.get("settle", 5))
    units: list[str] = spec["units"]
    unit_of_worker: dict[str, str] = spec.get("worker_units", {})
    first = unit_states(units)
    while True:
        problems = unit_problems(units, first, settle)
        if not problems:
            problems = worker_problems(spec["cli"], spec["app"], spec.get("workers", {}))
        if not problems:
            problems = flower_problems(spec.get("flower_url", ""))
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(1)
    named = []
    for problem in problems:
        subject, _, what = problem.partition(": ")
        if subject not in units:
            subject, what = "", problem
        if problem.startswith("worker "):
            subject = unit_of_worker.get(problem.split()[1], "")
        if not subject and "Flower" in problem:
            subject = spec.get("flower_unit", "")
        named.append(f"{subject}: {what}: {journal_tail(subject)}" if subject else problem)
    return {"ok": not problems, "problems": named, "seconds": round(time.monotonic() - started, 2)}


if __name__ == "__main__":
    report = gate(json.loads(sys.argv[1]))
    print(json.dumps(report))
    sys.exit(0 if report["ok"] else 1)
