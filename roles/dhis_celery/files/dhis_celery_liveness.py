"""Liveness of the Celery worker instances on this host (the role's PREFIX-liveness.timer).

A worker can keep its process and stop consuming (after a broker blip, celery#8082, #4453):
systemd sees nothing wrong. Each round asks every running instance of this host, by its node
name, which tasks it holds reserved and which it runs. An instance is restarted when it fails
`failures` rounds in a row, a round being failed when the instance
  - does not answer at all, or
  - answers but holds reserved tasks and runs none, and has run none of those it held the round
    before (a gevent worker that lost its broker connection in a burst was seen doing this:
    received hundreds of tasks, ran none, answered every ping). A task waiting on its rate limit
    or its ETA is not reserved until it moves to the pool (celery/worker/strategy.py): a worker
    waiting on one is not taken for a wedge.
The restart is a warm shutdown: its running tasks finish and the tasks it had reserved go back
to the queue (systemd sends SIGCONT after SIGTERM, so a stopped process shuts down too).

Run by root with the system Python in isolated mode: dhis_celery_liveness.py CONFIG, where CONFIG
is a JSON file the role writes ({"cli", "app", "instances": {NAME: UNIT}, "timeout", "failures",
"state_dir"}). The questions run through the project's command (dhis_celery_run.py), which drops
to the application user before any code of the virtualenv runs. A round where the broker cannot
be asked (no answer from the command at all) restarts nothing.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

# Run by the project's command as the application user. Prints {node: {"reserved": [ids],
# "active": n}} for the nodes that answered; active is -1 where it was not asked (the node holds
# nothing) or got no answer, which counts as running.
ASK = """
import json, sys
from celery.app.utils import find_app
app = find_app(sys.argv[1])
nodes, timeout = json.loads(sys.argv[2]), float(sys.argv[3])
def ask(method, destination, *args):
    inspect = app.control.inspect(timeout=timeout, destination=destination, limit=len(destination))
    return getattr(inspect, method)(*args) or {}
reserved = ask("reserved", nodes)
holding = [node for node, requests in reserved.items() if requests]
active = ask("active", holding) if holding else {}
print(json.dumps({
    node: {
        "reserved": [request["id"] for request in requests],
        "active": len(active[node]) if node in active else -1,
    }
    for node, requests in reserved.items()
}))
"""


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


def answers(cli: str, app: str, nodes: list[str], timeout: int) -> dict[str, dict] | None:
    """What each node that answered holds and runs, or None when the broker could not be asked."""
    command = [cli, "python", "-c", ASK, app, json.dumps(nodes), str(timeout)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=2 * timeout + 60, check=False)
    except subprocess.TimeoutExpired:
        return None
    if result.returncode != 0:
        return None
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def missed(answer: dict | None, state: Path) -> int:
    """Rounds in a row, this one included, that the node did not answer (0: it answered). The
    count is kept in `state`."""
    if answer is not None:
        state.unlink(missing_ok=True)
        return 0
    rounds = int(state.read_text() or 0) + 1 if state.exists() else 1
    state.write_text(str(rounds))
    return rounds


def stuck(answer: dict | None, state: Path) -> int:
    """Rounds in a row, this one included, that the node held reserved tasks and ran none of them
    (0: it runs something, holds nothing or did not answer). The held ids are kept in `state`."""
    if answer is None or not answer["reserved"] or answer["active"] != 0:
        state.unlink(missing_ok=True)
        return 0
    held = answer["reserved"]
    before = json.loads(state.read_text()) if state.exists() else {"ids": [], "rounds": 0}
    # Every task held last round is still held: none of them ran (new ones may have come).
    rounds = before["rounds"] + 1 if before["ids"] and set(before["ids"]) <= set(held) else 1
    state.write_text(json.dumps({"ids": sorted(held), "rounds": rounds}))
    return rounds


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
    replies = answers(config["cli"], config["app"], [f"{name}@{host}" for name in running], timeout)
    if replies is None:
        print("liveness: the broker could not be asked; nothing restarted this round")
        return 0
    for name, unit in running.items():
        answer = replies.get(f"{name}@{host}")
        states = state_dir / f"{name}.misses", state_dir / f"{name}.stuck"
        # Each keeps its own count and drops it when the round does not fail its way.
        silent, held_rounds = missed(answer, states[0]), stuck(answer, states[1])
        if silent:
            rounds, now = silent, f"did not answer a ping within {timeout} s"
            then = f"did not answer {rounds} pings in a row"
        elif held_rounds and answer:
            held = len(answer["reserved"])
            rounds, now = held_rounds, f"holds {held} reserved task(s) and runs none"
            then = f"has held {held} reserved task(s) and run none of them for {rounds} rounds in a row"
        else:
            continue
        if rounds < failures:
            print(f"liveness: {unit} {now} ({rounds} of {failures})")
            continue
        for state in states:
            state.unlink(missing_ok=True)
        print(f"liveness: {unit} {then}: restarting it (warm shutdown)")
        subprocess.run(["systemctl", "restart", "--no-block", unit], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
