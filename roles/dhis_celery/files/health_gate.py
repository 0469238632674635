"""The dhis_celery health gate: prove that what the role started runs, or say which unit does not.

Run by the role as root with the system Python in isolated mode, at the end of every converge:
    python3 -I -c "$(cat health_gate.py)" '{"units": [...], "restart": [...], "workers": {...}, ...}'
It first restarts the units listed in `restart`, one at a time in the order of `order` (each
`systemctl restart` returns once the unit is up again; a worker's is a warm shutdown), and stops
at the first that fails. Restart and gate are one step so that site.yml's rolling play can run
that step one host at a time while everything else runs on all hosts at once. Once the gate
passes, the notes the role keeps in `restart_dir` (one file per unit to restart) are removed;
a failed restart or gate leaves them for the next run.
It passes when, within `timeout` seconds after the restarts:
  - every unit, and every unit it restarted (the project's web unit), is active and running,
    and has run for `settle` seconds without a restart
    (a unit between crash-loop restarts is "activating", and one that just came back has a
    recent start and a higher NRestarts: neither passes);
  - every worker instance answers ping and consumes exactly its queues (asked through the
    project's command, which runs as the application user);
  - Flower, when given, answers 401 without credentials.
Workers and Flower are asked while the units settle, not after: an answer counts as long as no
unit has started again since it was given (a restart fails the units' check on its own), so the
gate ends when the youngest unit has run `settle` seconds, not a question later.
It prints one JSON object: {"ok": bool, "restarted": [...], "problems": [...], "seconds": float};
each problem names
the unit and ends with the last error lines of its journal.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

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


def unit_problems(
    states: dict[str, dict[str, str]], first: dict[str, dict[str, str]], settle: float
) -> tuple[list[str], list[str], float]:
    """What fails (not running, restarted since `first`), what is still settling, and how many
    seconds until the youngest unit has run `settle` seconds."""
    now_us = time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6
    problems, young, wait = [], [], 0.0
    for unit, state in states.items():
        active, sub = state.get("ActiveState"), state.get("SubState")
        restarts = int(state.get("NRestarts") or 0) - int(first.get(unit, {}).get("NRestarts") or 0)
        age = (now_us - int(state.get("ActiveEnterTimestampMonotonic") or 0)) / 1e6
        if active != "active" or sub != "running":
            problems.append(f"{unit}: {active} ({sub})")
        elif restarts > 0:
            problems.append(f"{unit}: restarted {restarts} time(s) during the check")
        elif age < settle:
            young.append(f"{unit}: has run only {age:.1f} s (watching for {settle:.0f} s)")
            wait = max(wait, settle - age)
    return problems, young, wait


def starts(states: dict[str, dict[str, str]]) -> dict[str, str]:
    """When each unit last started: an answer given before a unit started again says nothing of it."""
    return {unit: state.get("ActiveEnterTimestampMonotonic", "") for unit, state in states.items()}


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


def restart(units: list[str], order: list[str]) -> tuple[list[str], list[str]]:
    """Restarts the units in `order`'s order (others are no longer this host's: skipped);
    returns those restarted and the problem that stopped it."""
    done: list[str] = []
    for unit in [u for u in order if u in units]:
        result = subprocess.run(["systemctl", "restart", "--", unit], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            return done, [f"{unit}: restart failed ({(result.stderr.strip().splitlines() or ['?'])[-1]})"]
        done.append(unit)
    return done, []


def gate(spec: dict) -> dict:
    started = time.monotonic()
    restarted, problems = restart(spec.get("restart", []), spec.get("order") or spec.get("restart", []))
    # A unit restarted here that is not the role's own (the project's web unit, on new settings)
    # is watched like them: a web unit that crash-loops on the new settings fails the gate.
    units: list[str] = spec["units"] + [unit for unit in restarted if unit not in spec["units"]]
    if problems:
        return report(spec, units, restarted, problems, started)
    deadline = time.monotonic() + float(spec.get("timeout", 90))
    settle = float(spec.get("settle", 5))
    first = unit_states(units)
    # The unit starts each answer was given under (None: not answered yet).
    workers_seen: dict[str, str] | None = None
    flower_seen: dict[str, str] | None = None
    while True:
        states = unit_states(units)
        now_started = starts(states)
        problems, young, wait = unit_problems(states, first, settle)
        if not problems and workers_seen != now_started:
            problems = worker_problems(spec["cli"], spec["app"], spec.get("workers", {}))
            workers_seen = None if problems else now_started
        if not problems and flower_seen != now_started:
            problems = flower_problems(spec.get("flower_url", ""))
            flower_seen = None if problems else now_started
        # Only settling left: wake when the youngest unit has run its time, not up to a second later.
        pause = min(wait, 1.0) if not problems else 1.0
        problems = problems or young
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(pause)
    return report(spec, units, restarted, problems, started)


def report(spec: dict, units: list[str], restarted: list[str], problems: list[str], started: float) -> dict:
    unit_of_worker: dict[str, str] = spec.get("worker_units", {})
    named = []
    for problem in problems:
        subject, _, what = problem.partition(": ")
        if subject not in units and subject not in spec.get("restart", []):
            subject, what = "", problem
        if problem.startswith("worker "):
            subject = unit_of_worker.get(problem.split()[1], "")
        if not subject and "Flower" in problem:
            subject = spec.get("flower_unit", "")
        named.append(f"{subject}: {what}: {journal_tail(subject)}" if subject else problem)
    if not problems and spec.get("restart_dir"):
        # Passed after its restarts: the notes kept for them (and for units started meanwhile) are done.
        for note in Path(spec["restart_dir"]).glob("*"):
            note.unlink()
    seconds = round(time.monotonic() - started, 2)
    return {"ok": not problems, "restarted": restarted, "problems": named, "seconds": seconds}


if __name__ == "__main__":
    outcome = gate(json.loads(sys.argv[1]))
    print(json.dumps(outcome))
    sys.exit(0 if outcome["ok"] else 1)
