"""The RabbitMQ cluster's state, through rabbitmqctl, for tasks/rabbitmq.yml.

Run by root with the system Python in isolated mode: python3 -I -c SOURCE MODE SPEC, where SPEC
is JSON {"nodes": [...], "vhost", "user", "timeout"}. Prints one JSON object.

- wait: until every node of SPEC runs in this node's cluster (or fail after SPEC's timeout).
- restart: restart this node, then wait as above (one node at a time: the play throttles).
- ensure: the vhost, the user with its password, its permissions on that vhost only, and no
  guest user; with SPEC's "metrics_user", the queue-metrics timer's user too, who may see the
  vhost through the management API (tag management) and configure, write and read nothing in
  it. The passwords come as JSON on stdin, {"password", "metrics_password"}, never in argv.
  Reports what it changed.
- count: the messages waiting in the vhost's queues (the rollback's drain guard).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

CTL = "/usr/sbin/rabbitmqctl"


def ctl(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([CTL, "-q", *args], input=stdin, capture_output=True, text=True, timeout=120)
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


def user_with_password(user: str, password: str, users: set[str], actions: list[str]) -> None:
    if user not in users:
        ctl("add_user", user, stdin=password)
        actions.append(f"added user {user}")
    elif ctl("authenticate_user", user, stdin=password, check=False).returncode != 0:
        ctl("change_password", user, stdin=password)
        actions.append(f"changed the password of {user}")


def permissions_on(vhost: str, user: str, pattern: str, actions: list[str]) -> None:
    """The user's permissions: on VHOST, configure, write and read all PATTERN; none elsewhere."""
    wanted = {"vhost": vhost, "configure": pattern, "write": pattern, "read": pattern}
    granted = listed("list_user_permissions", user)
    if granted != [wanted]:
        for other in granted:
            if other["vhost"] != vhost:
                ctl("clear_permissions", "-p", other["vhost"], user)
        ctl("set_permissions", "-p", vhost, user, pattern, pattern, pattern)
        actions.append(f"set the permissions of {user} to {vhost} only")


def tags(value: list | str) -> list[str]:
    """A user's tags as rabbitmqctl's JSON gives them: a list, or a string "[a, b]" on some releases."""
    return value if isinstance(value, list) else value.strip("[]").replace(",", " ").split()


def ensure(spec: dict, secrets: dict) -> dict:
    vhost, user, actions = spec["vhost"], spec["user"], []
    if vhost not in {v["name"] for v in listed("list_vhosts", "name")}:
        ctl("add_vhost", vhost)
        actions.append(f"added vhost {vhost}")
    users = {u["user"]: tags(u["tags"]) for u in listed("list_users")}
    user_with_password(user, secrets["password"], set(users), actions)
    permissions_on(vhost, user, ".*", actions)
    metrics = spec.get("metrics_user") or ""
    if metrics:
        user_with_password(metrics, secrets["metrics_password"], set(users), actions)
        if users.get(metrics) != ["management"]:
            ctl("set_user_tags", metrics, "management")
            actions.append(f"tagged {metrics} management")
        permissions_on(vhost, metrics, "^$", actions)
    if "guest" in users and user != "guest":
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
