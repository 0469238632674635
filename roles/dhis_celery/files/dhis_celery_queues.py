"""Messages waiting in the Celery queues on the broker: Redis (kombu's priority lists included)
or, for the timer on a RabbitMQ node, the vhost's queues through the management API.

kombu keeps one Redis list per priority step: QUEUE, then QUEUE + "\\x06\\x16" + "3", "6", "9".
A count that reads only QUEUE misses every message sent with a priority (the queue-length-zero
reports of celery-exporter#100, #190). Delivered and not yet acknowledged messages wait in the
hash `unacked`.

Two uses, both with the system Python in isolated mode (no Redis library needed):
  - the role's tasks (rollback's drain guard, verify): python3 -I -c SRC SPEC_JSON, the password
    on stdin (never in argv, the environment or -vvv logs); prints
    {"queues": {Q: N}, "total": N, "unacked": N, "memory": dataset bytes or null};
  - the PREFIX-queue-metrics timer on the broker host: python3 -I dhis_celery_queues.py CONFIG,
    the password in the root-only file CONFIG names; writes a Prometheus textfile for
    node_exporter's textfile collector (atomically, 0644, no secret in it).
SPEC/CONFIG: {"host", "port", "user", "db", "queues"; "tls_ca_file" when Redis speaks TLS; for
verify "memory": true; for the timer "password_file", "textfile", "app"}. With "all_databases":
true (a flavour switch's guard, as the admin user) every database's lists are counted instead.
On a RabbitMQ node the timer's CONFIG has "api" (the loopback management URL), "vhost", "user",
"password_file", "queues", "textfile" and "app": the user may see the vhost and touch nothing in it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import ssl
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
Reply = int | str | list | None


class Redis:
    """Just enough RESP2 for AUTH, SELECT, LLEN, HLEN and MEMORY STATS."""

    def __init__(self, host: str, port: int, timeout: float = 5, ca_file: str = "") -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if ca_file:  # TLS: the server's certificate must chain to the CA and name the host
            self.sock = ssl.create_default_context(cafile=ca_file).wrap_socket(self.sock, server_hostname=host)
        self.reader = self.sock.makefile("rb")

    def __call__(self, *args: str) -> Reply:
        parts = [a.encode() for a in args]
        self.sock.sendall(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))
        return self.reply(args[0])

    def reply(self, command: str) -> Reply:
        line = self.reader.readline().rstrip(b"\r\n").decode()
        kind, rest = line[:1], line[1:]
        if kind == ":":
            return int(rest)
        if kind == "+":
            return rest
        if kind == "$":
            return None if int(rest) < 0 else self.reader.read(int(rest) + 2)[:-2].decode()
        if kind == "*":
            return [self.reply(command) for _ in range(max(int(rest), 0))]
        # Errors never echo the arguments, so a refused AUTH cannot leak the password.
        raise RuntimeError(f"Redis refused {command}: {rest}" if kind == "-" else f"unexpected reply to {command}")


def count(spec: dict, password: str) -> dict:
    redis = Redis(spec["host"], int(spec["port"]), ca_file=spec.get("tls_ca_file") or "")
    redis("AUTH", spec["user"], password)
    redis("SELECT", str(spec["db"]))
    queues = {q: sum(int(redis("LLEN", q + suffix)) for suffix in PRIORITY_SUFFIXES) for q in spec["queues"]}
    memory = None
    if spec.get("memory"):
        stats = redis("MEMORY", "STATS")
        memory = (
            dict(zip(stats[::2], stats[1::2], strict=True)).get("dataset.bytes") if isinstance(stats, list) else None
        )
    return {"queues": queues, "total": sum(queues.values()), "unacked": int(redis("HLEN", "unacked")), "memory": memory}


def rabbitmq_count(spec: dict, password: str) -> dict:
    """The vhost's task queues, ready messages one by one and unacknowledged ones summed, as
    files/dhis_celery_rabbitmq.py counts them with rabbitmqctl: ETA tasks (celery_delayed_*)
    summed as one, events and remote-control replies left out."""
    url = f"{spec['api']}/api/queues/{urllib.parse.quote(spec['vhost'], safe='')}"
    request = urllib.request.Request(url + "?columns=name,messages_ready,messages_unacknowledged")
    token = base64.b64encode(f"{spec['user']}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        rows = json.load(response)
    tasks = [r for r in rows if not r["name"].startswith("celeryev.") and not r["name"].endswith(".pidbox")]
    queues = {name: 0 for name in spec.get("queues", [])}
    for row in tasks:
        name = "delayed (ETA)" if row["name"].startswith("celery_delayed_") else row["name"]
        if int(row.get("messages_ready", 0)) or name in queues:
            queues[name] = queues.get(name, 0) + int(row.get("messages_ready", 0))
    unacked = sum(int(row.get("messages_unacknowledged", 0)) for row in tasks)
    return {"queues": queues, "total": sum(queues.values()), "unacked": unacked, "memory": None}


def held(spec: dict, password: str) -> dict:
    """Every message the server holds, in every database: a flavour switch leaves them all
    behind, whichever project's they are. kombu's queues are lists (other data the role puts in
    Redis is not: results, cache values and Beat's fence are strings), its reserved messages the
    hash `unacked` of each database. Needs a user that may read every key (the role's admin)."""
    redis = Redis(spec["host"], int(spec["port"]), ca_file=spec.get("tls_ca_file") or "")
    try:
        redis("AUTH", spec["user"], password)
    except RuntimeError:  # a server as Debian's package left it (no users) still gets counted
        redis = Redis(spec["host"], int(spec["port"]), ca_file=spec.get("tls_ca_file") or "")
    queues: dict[str, int] = {}
    unacked = 0
    for db in re.findall(r"^db(\d+):", str(redis("INFO", "keyspace")), re.M):
        redis("SELECT", db)
        cursor = "0"
        while True:
            cursor, keys = redis("SCAN", cursor, "COUNT", "1000", "TYPE", "list")
            for key in keys:
                queues[f"db{db}:{key}"] = int(redis("LLEN", key))
            if cursor == "0":
                break
        unacked += int(redis("HLEN", "unacked"))
    queues = {name: n for name, n in queues.items() if n}
    return {"queues": queues, "total": sum(queues.values()), "unacked": unacked, "memory": None}


def label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def textfile(app: str, counts: dict | None, now: float) -> str:
    """The Prometheus text format; counts None means the broker could not be read."""
    lines = [
        "# HELP dhis_celery_queue_metrics_up Whether the last read of the broker succeeded.",
        "# TYPE dhis_celery_queue_metrics_up gauge",
        f'dhis_celery_queue_metrics_up{{app="{label(app)}"}} {0 if counts is None else 1}',
    ]
    if counts is not None:
        lines += [
            "# HELP dhis_celery_queue_length Messages waiting in a Celery queue, every priority list included.",
            "# TYPE dhis_celery_queue_length gauge",
            *(
                f'dhis_celery_queue_length{{app="{label(app)}",queue="{label(q)}"}} {n}'
                for q, n in counts["queues"].items()
            ),
            "# HELP dhis_celery_queue_unacked Messages delivered to a worker and not acknowledged yet.",
            "# TYPE dhis_celery_queue_unacked gauge",
            f'dhis_celery_queue_unacked{{app="{label(app)}"}} {counts["unacked"]}',
            "# HELP dhis_celery_queue_metrics_last_success_timestamp_seconds When the broker was last read.",
            "# TYPE dhis_celery_queue_metrics_last_success_timestamp_seconds gauge",
            f'dhis_celery_queue_metrics_last_success_timestamp_seconds{{app="{label(app)}"}} {now:.0f}',
        ]
    return "\n".join(lines) + "\n"


def write_textfile(config: dict) -> int:
    counter = rabbitmq_count if config.get("api") else count
    try:
        counts: dict | None = counter(config, Path(config["password_file"]).read_text())
    except (OSError, RuntimeError, ValueError) as error:
        where = config.get("api") or f"{config['host']}:{config['port']}"
        print(f"cannot read the broker at {where}: {error}", file=sys.stderr)
        counts = None
    target = Path(config["textfile"])
    # node_exporter must never read a half-written file: write beside it, then rename.
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    partial.write_text(textfile(config["app"], counts, time.time()))
    partial.chmod(0o644)
    partial.replace(target)
    return 0 if counts is not None else 1


def main(argv: list[str]) -> int:
    if argv[1].lstrip().startswith("{"):
        try:
            spec = json.loads(argv[1])
            counter = held if spec.get("all_databases") else count
            print(json.dumps(counter(spec, sys.stdin.readline().rstrip("\n"))))
        except (OSError, RuntimeError, ValueError) as error:
            print(f"cannot read the broker: {error}", file=sys.stderr)
            return 1
        return 0
    return write_textfile(json.loads(Path(argv[1]).read_text()))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
