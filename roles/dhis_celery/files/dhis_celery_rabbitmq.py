"""The RabbitMQ cluster's state, through rabbitmqctl, for tasks/rabbitmq.yml.

Run by root with the system Python in isolated mode: python3 -I -c SOURCE MODE SPEC, where SPEC
is JSON {"nodes": [...], "vhost", "user", "timeout"}. Prints one JSON object.

- wait: until every node of SPEC runs in this node's cluster (or fail after SPEC's timeout).
- restart: restart this node, then wait as above (one node at a time: the play throttles).
- ensure: the vhost, the user with its password, its permissions on that vhost only, and no
  guest user; with SPEC's "metrics" true, SPEC's "metrics_user" too, the queue-metrics timer's
  user, who may see the vhost through the management API (tag management) and configure, write
  and read nothing in it; with "metrics" false, no such user. The passwords come as JSON on
  stdin, {"password", "metrics_password"}, never in argv.
  Reports what it changed.
- count: the messages waiting in the vhost's queues (the rollback's drain guard).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

CTL = "/usr/sbin/rabbitmqctl"


def ctl(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    # A password goes on stdin, and then no -q: RabbitMQ 4.0's wrapper script lets the CLI read
    # stdin only when `add_user USER`, `change_password USER` or `authenticate_user USER` come as
    # its only arguments (else it passes -noinput, and the read hangs). The CLI decodes stdin by
    # its locale: UTF-8 on both sides, whatever locale the host or Ansible runs this in.
    quiet = [] if stdin is not None else ["-q"]
    done = subprocess.run(
        [CTL, *quiet, *args],
        input=stdin,
        capture_output=True,
        encoding="utf-8",
        env={**os.environ, "LC_ALL": "C.UTF-8"},
        timeout=120,
    )
    if check and done.returncode != 0:
        why = done.stderr.strip() or done.stdout.strip()
        raise RuntimeError(f"rabbitmqctl {args[0]} failed ({done.returncode}): {why}")
    return done


def listed(*args: str) -> list[dict]:
    return json.loads(ctl(*args, "--formatter", "json").stdout or "[]")


def running_nodes() -> list[str]:
    done = ctl("cluster_status", "--formatter", "json", check=False)
    if done.returncode != 0:
        return []
    return sorted(json.loads(done.stdout).get("running_nodes", []))


def wait(spec: dict) -> dict:
    wanted, deadline, seen = sorted(spec["nodes"]), time.monotonic() + int(spec.get("timeout", 300)), []
    while time.monotonic() < deadline:
        seen = running_nodes()
        if set(wanted) <= set(seen):
            return {"changed": False, "running_nodes": seen}
        time.sleep(2)
    raise RuntimeError(f"the cluster runs {seen or 'no node'}, wants {wanted}: see /var/log/rabbitmq/ on the nodes")


def restart(spec: dict) -> dict:
    subprocess.run(["systemctl", "restart", "rabbitmq-server.service"], check=True, timeout=600)
    return {**wait(spec), "changed": True}


def user_with_password(user: str, password: str, state: dict, actions: list[str]) -> None:
    if user not in state["users"]:
        ctl("add_user", user, stdin=password)
        actions.append(f"added user {user}")
    elif not state["authenticates"][user]:
        ctl("change_password", user, stdin=password)
        actions.append(f"changed the password of {user}")


def permissions_on(vhost: str, user: str, pattern: str, state: dict, actions: list[str]) -> None:
    """The user's permissions: on VHOST, configure, write and read all PATTERN; none elsewhere."""
    wanted = {"vhost": vhost, "configure": pattern, "write": pattern, "read": pattern}
    granted = state["permissions"][user]
    if granted != [wanted]:
        for other in granted:
            if other["vhost"] != vhost:
                ctl("clear_permissions", "-p", other["vhost"], user)
        ctl("set_permissions", "-p", vhost, user, pattern, pattern, pattern)
        actions.append(f"set the permissions of {user} to {vhost} only")


def read_state(passwords: dict[str, str]) -> dict:
    """What ensure compares, read all at once: each rabbitmqctl call boots an Erlang VM (a second
    or more with TLS between the nodes), and none of these reads depends on another. A user that
    does not exist has no permissions and does not authenticate."""

    def permissions(user: str) -> list[dict]:
        done = ctl("list_user_permissions", user, "--formatter", "json", check=False)
        return json.loads(done.stdout or "[]") if done.returncode == 0 else []

    def authenticates(user: str) -> bool:
        return ctl("authenticate_user", user, stdin=passwords[user], check=False).returncode == 0

    with ThreadPoolExecutor(max_workers=2 + 2 * len(passwords)) as pool:
        vhosts = pool.submit(listed, "list_vhosts", "name")
        users = pool.submit(listed, "list_users")
        granted = {user: pool.submit(permissions, user) for user in passwords}
        checked = {user: pool.submit(authenticates, user) for user in passwords}
        return {
            "vhosts": {v["name"] for v in vhosts.result()},
            "users": {u["user"]: tags(u["tags"]) for u in users.result()},
            "permissions": {user: future.result() for user, future in granted.items()},
            "authenticates": {user: future.result() for user, future in checked.items()},
        }


def tags(value: list | str) -> list[str]:
    """A user's tags as rabbitmqctl's JSON gives them: a list, or a string "[a, b]" on some releases."""
    return value if isinstance(value, list) else value.strip("[]").replace(",", " ").split()


def ensure(spec: dict, secrets: dict) -> dict:
    vhost, user, actions = spec["vhost"], spec["user"], []
    metrics = spec.get("metrics_user") or ""
    passwords = {user: secrets["password"]}
    if metrics and spec.get("metrics"):
        passwords[metrics] = secrets["metrics_password"]
    state = read_state(passwords)
    if vhost not in state["vhosts"]:
        ctl("add_vhost", vhost)
        actions.append(f"added vhost {vhost}")
    user_with_password(user, secrets["password"], state, actions)
    permissions_on(vhost, user, ".*", state, actions)
    if metrics in passwords:
        user_with_password(metrics, secrets["metrics_password"], state, actions)
        if state["users"].get(metrics) != ["management"]:
            ctl("set_user_tags", metrics, "management")
            actions.append(f"tagged {metrics} management")
        permissions_on(vhost, metrics, "^$", state, actions)
    elif metrics in state["users"] and metrics not in (user, "guest"):
        ctl("delete_user", metrics)
        actions.append(f"deleted {metrics} (queue metrics off)")
    if "guest" in state["users"] and user != "guest":
        ctl("delete_user", "guest")
        actions.append("deleted the guest user")
    return {"changed": bool(actions), "actions": actions}


def count(spec: dict) -> dict:
    """Messages in the vhost's task queues, ready or delivered and not yet acknowledged: the
    queues of SPEC one by one, the ETA tasks Celery parks in its celery_delayed_* queues summed,
    and any other queue that holds messages. Events and remote-control replies are not tasks."""
    rows = listed("list_queues", "-p", spec["vhost"], "name", "messages_ready", "messages_unacknowledged")
    tasks = [r for r in rows if not r["name"].startswith("celeryev.") and not r["name"].endswith(".pidbox")]
    queues = {name: 0 for name in spec.get("queues", [])}
    for row in tasks:
        name = "delayed (ETA)" if row["name"].startswith("celery_delayed_") else row["name"]
        if int(row["messages_ready"]) or name in queues:
            queues[name] = queues.get(name, 0) + int(row["messages_ready"])
    unacked = sum(int(row["messages_unacknowledged"]) for row in tasks)
    return {"changed": False, "queues": queues, "unacked": unacked, "total": sum(queues.values())}


def main(argv: list[str]) -> int:
    mode, spec = argv[1], json.loads(argv[2])
    try:
        if mode == "ensure":
            result = ensure(spec, json.loads(sys.stdin.read()))
        else:
            result = {"wait": wait, "restart": restart, "count": count}[mode](spec)
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        print(json.dumps({"changed": False, "error": str(exc)}))
        print(exc, file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
