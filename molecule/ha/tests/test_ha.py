"""A RabbitMQ broker of three nodes: one cluster, quorum queues, a vhost and a user of its own,
and no task lost when the node that leads the queues stops and then loses its power.

The fault tests run last (in file order) and leave the cluster whole again.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from conftest import APP, BEAT_HOST, NODES, PROJECT, WORKER_HOST
from dhis_testlib import completed, django, play, run, send_batch, setting, wait_for

# `make reliability` runs the fault tests in a larger form and saves the rows (docs/ha.json),
# from which docs/RELIABILITY.md's RabbitMQ section is generated.
BATCH = int(os.environ.get("DHIS_HA_BATCH", "300"))
REPORT = os.environ.get("DHIS_HA_REPORT", "")
WORK = 0.2
KILLED_WORK = 8.0
SECOND_WORK = 1.0  # case C's second batch outlasts a run of site.yml
ROWS: list[dict] = []
VHOST = "dhis_celery"
QUEUES = {"celery", "sync", "monitor"}
WORKER = "celery-worker@default"
# As molecule.yml lays the project out; docs/RELIABILITY.md says what was measured.
PROJECT_LAYOUT = (
    "a web host (Flower; Redis for the cache and Beat's fence; PostgreSQL for Beat's schedule and the "
    "results), a worker host with one prefork worker of concurrency 4, and a Beat host"
)


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    if not (REPORT and ROWS):
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))
    import reliability_report

    cpus, mem = os.cpu_count(), os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**30
    results = {
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.system()} {platform.release()}, {cpus} cores, {mem} GiB",
        "parameters": {"batch": BATCH, "work": WORK, "project": PROJECT_LAYOUT},
        "rows": ROWS,
    }
    Path(REPORT).write_text(json.dumps(results, indent=2) + "\n")
    reliability_report.main()


def ctl(host: Any, *args: str) -> Any:
    return json.loads(run(host, "rabbitmqctl -q " + " ".join(args) + " --formatter json") or "[]")


def queues(host: Any) -> dict[str, dict]:
    rows = ctl(host, "list_queues", "-p", VHOST, "name", "type", "leader", "members", "messages")
    return {row["name"]: row for row in rows}


def test_three_nodes_form_one_cluster(ha: dict[str, Any]) -> None:
    for name in NODES:
        status = ctl(ha[name], "cluster_status")
        assert sorted(status["running_nodes"]) == [f"rabbit@{n}" for n in NODES], name


def test_each_project_host_runs_its_part_only(ha: dict[str, Any]) -> None:
    """The worker on the worker host, Beat on the Beat host, Flower and Redis on the web host;
    the worker and Beat hold their AMQP connections to the cluster."""
    parts = {
        APP: {"celery-flower.service", "redis-server.service"},
        WORKER_HOST: {f"{WORKER}.service"},
        BEAT_HOST: {"celery-beat.service"},
    }
    every = set().union(*parts.values())
    for name, mine in parts.items():
        for unit in every:
            assert ha[name].service(unit).is_running == (unit in mine), (name, unit)
    for name in (WORKER_HOST, BEAT_HOST):
        assert wait_for(lambda host=ha[name]: amqp_connections(host) != "", timeout=30), name


def test_every_task_queue_is_a_quorum_queue_on_every_node(ha: dict[str, Any]) -> None:
    send_batch(ha[APP], 7, 3)  # declares the queues if no worker has yet
    found = queues(ha[NODES[0]])
    assert QUEUES <= set(found), found
    for name in QUEUES:
        assert found[name]["type"] == "quorum", found[name]
        assert sorted(found[name]["members"]) == [f"rabbit@{n}" for n in NODES], found[name]


def test_the_application_user_reaches_its_vhost_only_and_guest_is_gone(ha: dict[str, Any]) -> None:
    node = ha[NODES[0]]
    users = {row["user"] for row in ctl(node, "list_users")}
    assert "guest" not in users and setting(node, "dhis_celery_rabbitmq_user") in users
    granted = ctl(node, "list_user_permissions", setting(node, "dhis_celery_rabbitmq_user"))
    assert [row["vhost"] for row in granted] == [VHOST]
    # The password the inventory typed (URL and shell characters, a non-ASCII letter) is the one
    # RabbitMQ holds: checked on stdin as UTF-8, as the role set it. Without -q: RabbitMQ 4.0's
    # wrapper gives the CLI stdin only when `authenticate_user USER` are its only arguments. The
    # locale says how the CLI decodes stdin (this shell's is POSIX).
    password, user = setting(node, "dhis_celery_rabbitmq_password"), setting(node, "dhis_celery_rabbitmq_user")
    command = f"LC_ALL=C.UTF-8 timeout 60 rabbitmqctl authenticate_user {shlex.quote(user)}"
    assert node.run(f"printf %s {shlex.quote(password)} | {command}").rc == 0
    # A password one letter short is refused: the check can fail.
    assert node.run(f"printf %s {shlex.quote(password[:-1])} | {command}").rc != 0


def test_the_management_api_listens_on_loopback_only(ha: dict[str, Any]) -> None:
    for name in NODES:
        listening = run(ha[name], "ss -Hltn 'sport = :15672'")
        addresses = {line.split()[3].rsplit(":", 1)[0] for line in listening.splitlines()}
        assert addresses == {"127.0.0.1"}, (name, listening)


DIST_PORT = 25672  # Erlang distribution between the nodes: AMQP's port + 20000
TLS_PROBE = """
import socket, ssl, sys
node, name, cafile, port, cert = sys.argv[1], sys.argv[2], sys.argv[3] or None, int(sys.argv[4]), sys.argv[5]
context = ssl.create_default_context(cafile=cafile)
if cert:
    context.load_cert_chain(cert + ".pem", cert + ".key")
try:
    with context.wrap_socket(socket.create_connection((node, port), 5), server_hostname=name) as s:
        # Under TLS 1.3 a server that wants a client certificate says so after the handshake.
        s.settimeout(1)
        try:
            print("ok" if s.recv(1) else "closed", s.version())
        except TimeoutError:
            print("ok", s.version())
except ssl.SSLError as error:
    print("refused", error.reason)
except OSError as error:
    print("no TLS", error)
"""


def tls_probe(app: Any, node: str, name: str, cafile: str, port: int = 5671, cert: str = "") -> str:
    """A TLS handshake from APP to NODE:PORT checking NAME against CAFILE ("": the system's CAs),
    presenting CERT.pem and CERT.key when given: "ok TLSv1.x" or "refused REASON"."""
    args = " ".join(shlex.quote(str(a)) for a in (node, name, cafile, port, cert))
    return run(app, f"python3 -c {shlex.quote(TLS_PROBE)} {args}").strip()


def test_amqp_speaks_only_tls_and_clients_check_the_ca_and_the_name(ha: dict[str, Any]) -> None:
    app, ca = ha[APP], "/etc/dhis-celery-tls/ca.pem"
    for name in NODES:
        ports = {line.split()[3].rsplit(":", 1)[1] for line in run(ha[name], "ss -Hltn").splitlines()}
        assert "5671" in ports and "5672" not in ports, (name, ports)
        assert tls_probe(app, name, name, ca).startswith("ok TLSv1."), name
        # The system's CAs do not know the inventory's CA; a name the certificate lacks is refused.
        assert tls_probe(app, name, name, "").startswith("refused CERTIFICATE_VERIFY_FAILED"), name
        assert tls_probe(app, name, "rabbit.invalid", ca).startswith("refused CERTIFICATE_VERIFY_FAILED"), name


def test_nothing_secret_crosses_the_network_in_clear_text(ha: dict[str, Any]) -> None:
    """A capture on the first node, of AMQP and of the nodes' own traffic (Erlang distribution,
    which replicates every message of a quorum queue), while the project's host logs in and sends
    a task: it shows neither the password nor the task's argument. A control sent in clear text
    to each port shows in it, so the capture does see what crosses in clear."""
    node, app = ha[NODES[0]], ha[APP]
    stamp = int(time.time() * 1000)
    config_id = 986_000 + int(time.time()) % 1000
    controls = {port: f"control-{port}-{stamp}" for port in (5671, DIST_PORT)}
    capture = "/tmp/amqp-tls.pcap"
    tcpdump = f"timeout 60 tcpdump -i any -U -s 0 -w {capture} 'tcp port 5671 or tcp port {DIST_PORT}'"
    node.run(f"rm -f {capture}; (setsid {tcpdump} >/tmp/tcpdump.log 2>&1 &)")
    assert wait_for(lambda: "listening" in node.run("cat /tmp/tcpdump.log").stdout, timeout=10)
    try:
        send_batch(app, config_id, 1)
        assert wait_for(lambda: completed(app, config_id)[0] == 1, timeout=60, every=0.5)
        for port, control in controls.items():
            probe = (
                "import socket; "
                f"s = socket.create_connection(({NODES[0]!r}, {port}), 5); s.sendall(b'{control}'); s.close()"
            )
            app.run(f"python3 -c {shlex.quote(probe)}")
        time.sleep(2)
    finally:
        node.run("pkill -INT -x tcpdump")
    seen = node.file(capture).content
    for control in controls.values():
        assert control.encode() in seen, "the capture must see what crosses in clear"
    between_nodes = run(node, f"tcpdump -r {capture} -nn 'tcp port {DIST_PORT} and not host dhis-ha-app' | wc -l")
    assert int(between_nodes) > 10, "the capture must hold the nodes' own traffic"
    password = setting(app, "dhis_celery_rabbitmq_password")
    for secret in (password.encode(), quote(password, safe="").encode(), str(config_id).encode()):
        assert secret not in seen, secret


def test_the_nodes_and_their_cli_speak_tls_only_with_certificates_of_the_ca(ha: dict[str, Any]) -> None:
    """Each node's distribution port (the other nodes, rabbitmqctl) completes a TLS session for a
    peer that presents a certificate of the inventory's CA, and refuses one that presents none;
    rabbitmqctl, which connects the same way, sees the whole cluster."""
    app, peer, ca = ha[APP], ha[NODES[1]], "/etc/dhis-celery-tls/ca.pem"
    for name in NODES:
        assert len(ctl(ha[name], "cluster_status")["running_nodes"]) == 3, name
        with_cert = tls_probe(peer, name, name, ca, DIST_PORT, "/etc/dhis-celery-tls/rabbitmq")
        assert with_cert.startswith("ok TLSv1."), (name, with_cert)
        # The project's host holds the CA but no node certificate.
        without = tls_probe(app, name, name, ca, DIST_PORT)
        assert without.startswith("refused"), (name, without)


def test_no_secret_in_the_nodes_or_the_settings_but_where_it_belongs(ha: dict[str, Any]) -> None:
    app = ha[APP]
    password = setting(app, "dhis_celery_rabbitmq_password")
    for name in NODES:
        assert password not in ha[name].run("cat /etc/rabbitmq/rabbitmq.conf /etc/rabbitmq/enabled_plugins").stdout
        cookie = ha[name].file("/var/lib/rabbitmq/.erlang.cookie")
        assert (cookie.user, cookie.mode) == ("rabbitmq", 0o400)
    for name in PROJECT:
        secrets = ha[name].file("/etc/dhis-celery/python/dhis_celery_secrets.py")
        assert secrets.mode == 0o640 and secrets.user == "root", name


def waiting_in_rabbitmq(ha: dict[str, Any]) -> int:
    return sum(int(q["messages"]) for name, q in queues(ha[NODES[0]]).items() if name in QUEUES)


def amqp_connections(app: Any) -> str:
    return run(app, "ss -Htn state established '( dport = :5671 or dport = :5672 )'").strip()


def round_trip(app: Any) -> None:
    config_id = int(time.time() * 1000) % 1_000_000_000
    send_batch(app, config_id, 3)
    assert wait_for(lambda: completed(app, config_id)[0] == 3, timeout=60, every=0.5)


METRICS_UNIT = "celery-queue-metrics"
TEXTFILE = "/var/lib/prometheus/node-exporter/celery-queues.prom"


def sync_length(node: Any) -> int | None:
    """The `sync` queue's length in the node's textfile, after a fresh count (None if absent)."""
    node.run(f"systemctl reset-failed {METRICS_UNIT}.service; systemctl start {METRICS_UNIT}.service")
    text = run(node, f"cat {TEXTFILE}")
    assert 'dhis_celery_queue_metrics_up{app="celery"} 1' in text, text
    found = re.search(r'^dhis_celery_queue_length{app="celery",queue="sync"} (\d+)$', text, re.M)
    return int(found.group(1)) if found else None


def test_every_node_reports_the_queue_lengths_for_prometheus(ha: dict[str, Any]) -> None:
    """Each node's queue-metrics timer counts through the loopback management API, as a user who
    may look and do nothing else: a task waiting while the worker is stopped shows on every node,
    and the count falls back to 0 once the worker drained it."""
    app, first = ha[APP], ha[NODES[0]]
    user = setting(app, "dhis_celery_rabbitmq_metrics_user")
    assert ctl(first, "list_user_permissions", user) == [
        {"vhost": VHOST, "configure": "^$", "write": "^$", "read": "^$"}
    ]
    assert [row["tags"] for row in ctl(first, "list_users") if row["user"] == user] in (
        [["management"]],
        ["[management]"],
    )
    for name in NODES:
        assert run(ha[name], f"systemctl is-active {METRICS_UNIT}.timer").strip() == "active", name
    run(ha[BEAT_HOST], "systemctl stop celery-beat.service")
    run(ha[WORKER_HOST], f"systemctl stop {WORKER}.service")
    try:
        send_batch(app, int(time.time()) % 1_000_000_000, 2)
        # The management API's counts are statistics, refreshed every few seconds.
        for name in NODES:
            assert wait_for(lambda node=ha[name]: sync_length(node) == 2, timeout=30, every=2), name
        password = run(first, f"cat /etc/dhis-celery-queue-metrics/{METRICS_UNIT}.password")
        for secret in (password, setting(app, "dhis_celery_rabbitmq_password")):
            assert secret not in run(first, f"cat {TEXTFILE}")
    finally:
        run(ha[WORKER_HOST], f"systemctl start {WORKER}.service")
        run(ha[BEAT_HOST], "systemctl start celery-beat.service")
    assert wait_for(lambda: sync_length(first) == 0, timeout=60, every=2)


def test_queue_metrics_turned_off_take_their_timer_and_their_user_with_them(ha: dict[str, Any]) -> None:
    """dhis_celery_queue_metrics_interval: 0 for the whole inventory (an extra variable), run on
    the first node: its timer, configuration and textfile go, and so does the user that may look
    (users are cluster-wide; it stays while any node's interval is above 0). Turned on again,
    both come back."""
    first = ha[NODES[0]]
    user = setting(ha[APP], "dhis_celery_rabbitmq_metrics_user")

    def users() -> set[str]:
        return {row["user"] for row in ctl(first, "list_users")}

    off = play(NODES[0], {"dhis_celery_queue_metrics_interval": 0})
    try:
        assert off.returncode == 0, (off.stdout + off.stderr)[-3000:]
        assert user not in users()
        for path in (f"/etc/systemd/system/{METRICS_UNIT}.timer", TEXTFILE):
            assert not first.file(path).exists, path
    finally:
        on = play(NODES[0], {})
    assert on.returncode == 0, (on.stdout + on.stderr)[-3000:]
    assert user in users()
    assert run(first, f"systemctl is-active {METRICS_UNIT}.timer").strip() == "active"


def test_a_broker_switch_waits_for_a_drained_broker_then_moves_the_project(ha: dict[str, Any]) -> None:
    """1. A task waits in RabbitMQ (worker and Beat stopped): the switch to Redis is refused
    before any change, naming dhis_celery_broker. 2. Drained, the switch goes through and tasks
    run through Redis. 3. Back to RabbitMQ the same way."""
    app, worker, beat = ha[APP], ha[WORKER_HOST], ha[BEAT_HOST]
    hosts = ",".join(PROJECT)
    settings = "/etc/dhis-celery/python/dhis_celery_settings.py"

    def on_amqp() -> list[bool]:
        return ["amqp://" in ha[name].file(settings).content_string for name in PROJECT]

    run(beat, "systemctl stop celery-beat.service")
    run(worker, f"systemctl stop {WORKER}.service")
    try:
        send_batch(app, int(time.time()) % 1_000_000_000, 1)
        assert wait_for(lambda: waiting_in_rabbitmq(ha) > 0, timeout=10)
        refused = play(hosts, {"dhis_celery_broker": "redis"})
        output = refused.stdout + refused.stderr
        assert refused.returncode != 0, output[-3000:]
        refusal = r"dhis_celery_broker: switching to redis .* holds [1-9]\d* waiting message"
        assert re.search(refusal, output), output[-3000:]
        assert not re.search(r"changed=[1-9]", output.split("PLAY RECAP")[-1]), output[-3000:]
        assert on_amqp() == [True] * 3
    finally:
        run(worker, f"systemctl start {WORKER}.service")
    assert wait_for(lambda: waiting_in_rabbitmq(ha) == 0, timeout=60)
    moved = play(hosts, {"dhis_celery_broker": "redis"})
    assert moved.returncode == 0, (moved.stdout + moved.stderr)[-3000:]
    assert on_amqp() == [False] * 3
    round_trip(app)
    # Nothing of the project talks AMQP any more: every unit of every host restarted onto Redis.
    for name in PROJECT:
        assert wait_for(lambda host=ha[name]: amqp_connections(host) == "", timeout=30), name
    # Back: Beat (started by the run) stopped again so that the Redis broker drains.
    run(beat, "systemctl stop celery-beat.service")
    time.sleep(3)
    back = play(hosts, {})
    assert back.returncode == 0, (back.stdout + back.stderr)[-3000:]
    assert on_amqp() == [True] * 3
    round_trip(app)
    for name in (WORKER_HOST, BEAT_HOST):
        assert wait_for(lambda host=ha[name]: amqp_connections(host) != "", timeout=30), name
    assert beat.service("celery-beat.service").is_running


def power_off(name: str) -> None:
    subprocess.run(["docker", "kill", name], check=True, capture_output=True)


def power_on(ha: dict[str, Any], name: str) -> None:
    subprocess.run(["docker", "start", name], check=True, capture_output=True)
    # /run is a tmpfs: the node boots as after a power cut, and rejoins its cluster.
    assert wait_for(lambda: ha[name].run("systemctl is-active rabbitmq-server").stdout.strip() == "active", 180, 2)
    assert wait_for(
        lambda: len(ctl(ha[NODES[0] if name != NODES[0] else NODES[1]], "cluster_status")["running_nodes"]) == 3, 120, 2
    )


# The scenario's periodic task (monitor-config-61, every 2 s) records a run of this config.
BEAT_CONFIG = 61


def beat_runs(app: Any) -> int:
    """Runs of Beat's periodic task: each one Beat sent and a worker ran."""
    out = django(
        app,
        "from dhis_app.models import SyncConfig, SyncRun\n"
        f"SyncConfig.objects.get_or_create(pk={BEAT_CONFIG}, defaults={{'name': 'beat-{BEAT_CONFIG}'}})\n"
        f"print(SyncRun.objects.filter(config_id={BEAT_CONFIG}).count())",
    )
    return int(out.split()[-1])


def test_losing_the_leader_of_the_queues_loses_no_task(ha: dict[str, Any]) -> None:
    app, size = ha[APP], BATCH
    leader = queues(ha[NODES[0]])["celery"]["leader"].split("@", 1)[1]
    survivor = ha[next(n for n in NODES if n != leader)]
    config_id = int(time.time() * 1000) % 1_000_000_000
    send_batch(app, config_id, size, WORK)
    assert wait_for(lambda: completed(app, config_id)[0] >= 20, timeout=60, every=0.5)
    done_before = completed(app, config_id)[0]
    beat_runs(app)  # creates the config Beat's task records runs of
    fault = time.monotonic()
    run(ha[leader], "systemctl stop rabbitmq-server")
    power_off(leader)
    try:
        # Workers resume: the next task completes on the surviving majority.
        assert wait_for(lambda: completed(app, config_id)[0] > done_before + 5, timeout=120, every=0.5)
        resumed = time.monotonic() - fault
        assert wait_for(lambda: completed(app, config_id)[0] >= size, timeout=300, every=1)
        done, duplicated = completed(app, config_id)
        # A task that had finished before the fault does not run again (in-flight ones may).
        again = django(
            app,
            "from dhis_app.models import SyncRun\n"
            f"rows = SyncRun.objects.filter(config_id={config_id}).order_by('created')[:{done_before}]\n"
            "print(sum(r.runs - 1 for r in rows))",
        )
        # Beat keeps scheduling after the fault: its task (every 2 s) runs again and again.
        beats, watched = beat_runs(app), time.monotonic()
        wait_for(lambda: beat_runs(app) >= beats + 3, timeout=30, every=1)
        ROWS.append(
            {
                "case": "A. the queues' leader stopped, then powered off, during a batch",
                "leader": leader,
                "sent": size,
                "completed": done,
                "duplicated": duplicated,
                "done_before_fault": done_before,
                "rerun_after_finishing": int(again.split()[-1]),
                "resumed_seconds": round(resumed, 1),
                "seconds": round(watched - fault, 1),
                "beat_runs_after_batch": beat_runs(app) - beats,
                "beat_watched_seconds": round(time.monotonic() - watched, 1),
            }
        )
        print(ROWS[-1])
        assert done == size, f"{size - done} task(s) lost"
        assert ROWS[-1]["rerun_after_finishing"] == 0
        assert resumed < 60, f"workers took {resumed:.0f} s to resume"
        assert ROWS[-1]["beat_runs_after_batch"] >= 3, "Beat stopped scheduling"
        assert queues(survivor)["celery"]["type"] == "quorum"
    finally:
        power_on(ha, leader)


def test_a_killed_worker_s_task_comes_back_within_seconds(ha: dict[str, Any]) -> None:
    app = ha[APP]
    config_id = int(time.time() * 1000) % 1_000_000_000
    send_batch(app, config_id, 1, KILLED_WORK)
    assert wait_for(lambda: "celery_trigger_auto_sync" in run(app, "dhis-celery celery inspect active --json"), 30, 0.5)
    killed = time.monotonic()
    run(ha[WORKER_HOST], f"systemctl kill -s KILL {WORKER}")
    # RabbitMQ requeues the task as soon as the worker's connection closes; systemd restarts
    # the worker, which takes it again (no visibility timeout to wait for, unlike Redis).
    assert wait_for(lambda: completed(app, config_id)[0] == 1, timeout=90, every=0.5)
    back = time.monotonic() - killed
    done, duplicated = completed(app, config_id)
    ROWS.append(
        {
            "case": "B. `kill -9` of the worker in the middle of a task",
            "sent": 1,
            "completed": done,
            "duplicated": duplicated,
            "work_seconds": KILLED_WORK,
            "completed_after_kill_seconds": round(back, 1),
        }
    )
    print(ROWS[-1])
    assert back < 60


def distribution(ha: dict[str, Any]) -> dict[str, str]:
    """Each node's distribution port, probed from a peer node with a certificate of the CA."""
    peer, ca = ha[NODES[1]], "/etc/dhis-celery-tls/ca.pem"
    return {name: tls_probe(peer, name, name, ca, DIST_PORT, "/etc/dhis-celery-tls/rabbitmq") for name in NODES}


@pytest.mark.skipif(
    not os.environ.get("DHIS_HA_DIST_SWITCH"), reason="make reliability's ha part: every node stops twice"
)
def test_the_running_cluster_s_distribution_switches_to_tls_and_back_without_losing_a_task(
    ha: dict[str, Any],
) -> None:
    """site.yml on the whole inventory turns TLS between the nodes off, then on again, while
    tasks run: each run stops every node and starts them together (a node of one kind cannot
    join the other's), the cluster re-forms, the distribution port speaks TLS only when it should,
    and every task completes. A first batch is sent before the first run; a second, of longer
    tasks, between the runs, so that it is still waiting in the queues when the second run
    stops the nodes."""
    app, size = ha[APP], BATCH
    assert all(probe.startswith("ok TLSv1.") for probe in distribution(ha).values()), distribution(ha)
    config_id = int(time.time() * 1000) % 1_000_000_000
    send_batch(app, config_id, size, WORK)
    started = time.monotonic()
    try:
        plain = play("", {"dhis_celery_rabbitmq_tls_between_nodes": False})
        assert plain.returncode == 0, (plain.stdout + plain.stderr)[-3000:]
        plain_probes = distribution(ha)
        assert not any(probe.startswith("ok") for probe in plain_probes.values()), plain_probes
        for name in NODES:
            assert len(ctl(ha[name], "cluster_status")["running_nodes"]) == 3, name
        done_while_plain = completed(app, config_id)[0]
        second_id = config_id + 1
        send_batch(app, second_id, size, SECOND_WORK)
    finally:
        back = play("", {})
    assert back.returncode == 0, (back.stdout + back.stderr)[-3000:]
    second_done_at_switch = completed(app, second_id)[0]
    assert all(probe.startswith("ok TLSv1.") for probe in distribution(ha).values()), distribution(ha)
    assert wait_for(lambda: completed(app, config_id)[0] >= size, timeout=300, every=1)
    assert wait_for(lambda: completed(app, second_id)[0] >= size, timeout=size * SECOND_WORK, every=1)
    done, duplicated = completed(app, config_id)
    second_done, second_duplicated = completed(app, second_id)
    ROWS.append(
        {
            "case": "C. TLS between the nodes turned off, then on, by site.yml during a batch",
            "sent": size,
            "completed": done,
            "duplicated": duplicated,
            "done_between_the_runs": done_while_plain,
            "second_sent": size,
            "second_work": SECOND_WORK,
            "second_done_when_the_second_run_ended": second_done_at_switch,
            "second_completed": second_done,
            "second_duplicated": second_duplicated,
            "seconds": round(time.monotonic() - started, 1),
            "plain_probe": sorted(set(plain_probes.values())),
        }
    )
    print(ROWS[-1])
    assert done == size, f"{size - done} task(s) of the first batch lost"
    assert second_done == size, f"{size - second_done} task(s) of the second batch lost"
    # Without tasks still waiting when the second run stopped the nodes, this test proves nothing.
    assert second_done_at_switch < size, "the second batch ended before the second run: make its tasks longer"
