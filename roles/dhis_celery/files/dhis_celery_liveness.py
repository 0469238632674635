"""Liveness of the Celery worker instances on this host (the role's PREFIX-liveness.timer).

A worker can keep its process and stop consuming (after a broker blip, celery#8082, #4453):
systemd sees nothing wrong. Each round pings every running instance of this host by its node
name; one that misses `failures` rounds in a row is restarted. The restart is a warm shutdown:
its running tasks finish and the tasks it had reserved go back to the queue (systemd sends
SIGCONT after SIGTERM, so a stopped process shuts down too).

Run by root with the system Python in isolated mode: dhis_celery_liveness.py CONFIG, where CONFIG
is a JSON file the role writes ({"cli", "instances": {NAME: UNIT}, "timeout", "failures",
"state_dir"}). The ping runs through the project's command (dhis_celery_run.py), which drops to
the application user before any code of the virtualenv runs. A round where the broker cannot be
asked (no answer from the command at all) restarts nothing.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path


def running_for(unit: str) -> float | None:
    """Seconds the unit has been active, or None when it is not active."""
    out = subprocess.run(
        ["systemctl", "show", "-p", "ActiveState", "-p", "ActiveEnterTimestampMonotonic", unit],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    if props.get("ActiveState") != "active":
        return None
    return time.clock_gettime(time.CLOCK_MONOTONIC) - int(props.get("ActiveEnterTimestampMonotonic", "0")) / 1e6


def answering(cli: str, nodes: list[str], timeout: int) -> set[str] | None:
    """The nodes that answered a ping, or None when the broker could not be asked."""
    command = [cli, "celery", "inspect", "ping", "--json", "--timeout", str(timeout), "--destination", ",".join(nodes)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout + 60, check=False)
    except subprocess.TimeoutExpired:
        return None
    if result.returncode == 0:
        try:
            return set(json.loads(result.stdout.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            return None
    if "No nodes replied" in result.stdout + result.stderr:
        return set()
    return None


def main(config_path: str) -> int:
    config = json.loads(Path(config_path).read_text())
    timeout, failures = int(config["timeout"]), int(config["failures"])
    state_dir = Path(config["state_dir"])
    host = socket.gethostname()
    # An instance that started less than a ping ago may not answer yet: not counted this round.
    running = {
        name: unit
        for name, unit in config["instances"].items()
        if (age := running_for(unit)) is not None and age > timeout + 30
    }
    if not running:
        return 0
    answered = answering(config["cli"], [f"{name}@{host}" for name in running], timeout)
    if answered is None:
        print("liveness: the broker could not be asked; nothing restarted this round")
        return 0
    for name, unit in running.items():
        misses_file = state_dir / f"{name}.misses"
        if f"{name}@{host}" in answered:
            misses_file.unlink(missing_ok=True)
            continue
        misses = int(misses_file.read_text() or 0) + 1 if misses_file.exists() else 1
        if misses < failures:
            misses_file.write_text(str(misses))
            print(f"liveness: {unit} did not answer a ping within {timeout} s ({misses} of {failures})")
            continue
        misses_file.unlink(missing_ok=True)
        print(f"liveness: {unit} did not answer {misses} pings in a row: restarting it (warm shutdown)")
        subprocess.run(["systemctl", "restart", "--no-block", unit], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
