"""Each project shape works through the role: a task round trip through its worker, Beat running
a periodic task, the web side using Celery where there is one, values delivered verbatim, and a
converge that starts a crashing worker fails naming the unit and its error."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from dhis_testlib import LINEAR, MITOGEN, ROOT, TLS_CA, admin_redis, app_redis, play, setting, wait_for

PLAYS = {
    play_["vars"]["dhis_celery_cli_name"]: play_["vars"]
    for play_ in yaml.safe_load((Path(__file__).resolve().parents[1] / "converge.yml").read_text())
}
SHAPES = {"plain-celery": "jobs", "shop-celery": "jobs", "wired-celery": "orders"}


def django(host: Any, cli: str, code: str) -> str:
    script = "import django; django.setup()\n" + code
    result = host.run(f"{cli} python -c {shlex.quote(script)}")
    assert result.rc == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("cli", SHAPES)
def test_a_task_makes_the_round_trip_through_the_worker(host: Any, cli: str) -> None:
    app = SHAPES[cli]
    assert django(host, cli, f"from {app}.tasks import add\nprint(add.delay(2, 3).get(timeout=30))") == "5"


@pytest.mark.parametrize("cli", SHAPES)
def test_beat_runs_the_periodic_task(host: Any, cli: str) -> None:
    app = SHAPES[cli]
    count = f"from {app}.models import Tick\nprint(Tick.objects.count())"
    before = int(django(host, cli, count))
    assert wait_for(lambda: int(django(host, cli, count)) > before, timeout=30)


@pytest.mark.parametrize("cli", SHAPES)
def test_units_run_as_the_project_user(host: Any, cli: str) -> None:
    variables = PLAYS[cli]
    prefix = variables.get("dhis_celery_unit_prefix", "celery")
    for worker in variables["dhis_celery_workers"]:
        unit = f"{prefix}-worker@{worker['name']}.service"
        assert host.run(f"systemctl show -p User --value {unit}").stdout.strip() == variables["dhis_celery_user"]
        pid = host.run(f"systemctl show -p MainPID --value {unit}").stdout.strip()
        assert host.run(f"stat -c %U /proc/{pid}").stdout.strip() == variables["dhis_celery_user"]


def test_a_gevent_worker_gets_gevent_and_runs_its_pool(host: Any) -> None:
    """plain's worker asks for the gevent pool: the role installed gevent into plain's virtualenv
    alone (shop's threads worker needs none), and the running worker's pool is gevent's, with two
    messages reserved per slot (with one, its consumer on Redis waits a second after each batch)."""
    version = "import gevent; print(gevent.__version__)"
    assert host.run(f"/srv/plain/venv/bin/python -c {shlex.quote(version)}").stdout.strip() == "26.9.0"
    assert host.run(f"/srv/shop/venv/bin/python -c {shlex.quote(version)}").rc != 0
    code = (
        "from dhis_celery_bootstrap.celery import app\n"
        "stats = app.control.inspect(timeout=10).stats() or {}\n"
        "print(sorted({(s['pool']['implementation'], s['prefetch_count']) for s in stats.values()}))"
    )
    assert django(host, "plain-celery", code) == "[('celery.concurrency.gevent:TaskPool', 128)]"


def test_a_burst_through_the_gevent_worker_keeps_its_broker_connection(host: Any) -> None:
    """plain's 64 greenlets finish their naps together and acknowledge at once, each on a broker
    connection of its own. Under kombu's default cap (10) a gevent x64 worker of the bench dropped
    its broker connection (MaxConnectionsError) and then ran none of the tasks it received, so
    the settings plain's worker loads raise the cap by its concurrency. The burst itself did not
    wedge this host's worker with the cap left at 10 (Valkey over TLS is slower): it checks the
    path, the cap's value checks the fix."""
    cap = "from django.conf import settings\nprint(settings.CELERY_BROKER_TRANSPORT_OPTIONS.get('max_connections'))"
    assert django(host, "plain-celery", cap) == "74"
    since = host.run("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    burst = "from celery import group\nfrom jobs.tasks import nap\n"
    burst += "print(sum(group(nap.s(0.1) for _ in range(1000)).apply_async().get(timeout=120)))"
    assert django(host, "plain-celery", burst) == "1000"
    prefix = PLAYS["plain-celery"].get("dhis_celery_unit_prefix", "celery")
    journal = host.run(f"journalctl -u {prefix}-worker@default.service --since {shlex.quote(since)}").stdout
    assert "Connection to broker lost" not in journal


def test_the_project_s_own_broker_setting_is_replaced_by_the_role_s(host: Any) -> None:
    url = django(host, "wired-celery", "from wired.celery import app\nprint(app.conf.broker_url.split('@')[-1])")
    assert url == "127.0.0.1:6379/4"


def test_the_web_side_sends_a_task_and_gets_its_result(host: Any) -> None:
    out = host.run("curl -s --max-time 40 http://127.0.0.1:8100/add/").stdout
    assert json.loads(out) == {"result": 5}


def test_an_environment_file_value_reaches_the_worker_verbatim(host: Any) -> None:
    value = django(
        host, "shop-celery", "from jobs.tasks import env\nprint(env.delay('SHOP_DB_PASSWORD').get(timeout=30))"
    )
    assert value == "p4ss; $HOME ' \" # \\ end"


def test_an_inventory_value_reaches_the_worker_and_the_command_verbatim(host: Any) -> None:
    expected = PLAYS["plain-celery"]["dhis_celery_environment"]["HARD_VALUE"]
    code = "from jobs.tasks import env\nprint(repr(env.delay('HARD_VALUE').get(timeout=30)))"
    assert django(host, "plain-celery", code) == repr(expected)
    assert django(host, "plain-celery", "import os\nprint(repr(os.environ['HARD_VALUE']))") == repr(expected)
    assert not host.file("/root/x").exists


def test_the_hard_redis_password_authenticates_verbatim(host: Any) -> None:
    assert app_redis(host, 6379, "PING") == "PONG"
    assert app_redis(host, 6380, "PING") == "PONG"


def test_the_cache_is_capped_at_a_tenth_of_memory_by_default(host: Any) -> None:
    """No project here sets dhis_celery_redis_cache_maxmemory_mb: the default rule applies."""
    memtotal_mb = host.ansible("setup", "filter=ansible_memtotal_mb")["ansible_facts"]["ansible_memtotal_mb"]
    lines = admin_redis(host, 6380, "CONFIG", "GET", "maxmemory").splitlines()
    assert int(lines[1]) == max(memtotal_mb // 10, 64) * 1024 * 1024, (memtotal_mb, lines)


def test_flower_of_each_project_takes_a_non_ascii_password(host: Any) -> None:
    password = "shapes flower pässwörd 😀"
    for port in (5555, 5556, 5557):
        code = host.run(
            f"curl -s -o /dev/null -w '%{{http_code}}' -u {shlex.quote('ops:' + password)} http://127.0.0.1:{port}/"
        ).stdout
        assert code == "200", port
        assert host.run(f"curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{port}/").stdout == "401"


def test_task_events_reach_flower_only_where_they_are_on(host: Any) -> None:
    """plain-celery sends task events (the default with Flower): its Flower knows its periodic
    ticks. shop-celery turns them off: its Flower still sees the worker alive (heartbeats) but no
    task, and has not switched events back on, although its tick runs every 2 s."""
    auth = shlex.quote("ops:shapes flower pässwörd 😀")

    def flower(port: int, path: str) -> str:
        return host.run(f"curl -s --max-time 10 -u {auth} http://127.0.0.1:{port}/{path}").stdout

    assert wait_for(lambda: json.loads(flower(5555, "api/tasks?limit=5") or "{}"), timeout=20)
    assert wait_for(lambda: re.search(r"^flower_worker_online\{[^}]*main@[^}]*\} 1\.0$", flower(5556, "metrics"), re.M))
    assert json.loads(flower(5556, "api/tasks?limit=5")) == {}


FINGERPRINT = (
    "{ find /etc/plain-celery -path /etc/plain-celery/python.new -prune -o -type f -print0 | sort -z"
    " | xargs -0 sha256sum;"
    " sha256sum /etc/systemd/system/celery-*.service /usr/local/bin/plain-celery;"
    " systemctl show -p ActiveEnterTimestampMonotonic celery-worker@default celery-beat celery-flower; } | sha256sum"
)
BAD_PROJECT = [
    (
        "settings-do-not-import",
        {"dhis_celery_django_settings_module": "plain.nosuch"},
        "dhis_celery_django_settings_module",
    ),
    ("celery-app-does-not-import", {"dhis_celery_app_module": "plain.nosuch"}, "No module named 'plain.nosuch'"),
    (
        "fails-only-with-the-role-s-settings",
        {"dhis_celery_django_settings": {"INSTALLED_APPS": ["jobs", "nosuch_app"]}},
        "No module named 'nosuch_app'",
    ),
]


@pytest.mark.parametrize(("extra", "expected"), [c[1:] for c in BAD_PROJECT], ids=[c[0] for c in BAD_PROJECT])
def test_a_project_that_does_not_load_changes_nothing_installed(host: Any, extra: dict, expected: str) -> None:
    before = host.run(FINGERPRINT).stdout
    result = play(host.backend.get_hostname(), {**PLAYS["plain-celery"], **extra}, env=MITOGEN)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert expected in output, output[-3000:]
    assert host.run(FINGERPRINT).stdout == before


def test_a_converge_that_starts_a_crashing_worker_fails_naming_it(host: Any) -> None:
    """A bad release (the task module raises at import) with a restart: the gate fails, naming
    the unit and the error; the fixed release converges again."""
    tasks = "/srv/plain/jobs/tasks.py"
    host.run(f"cp {tasks} /root/tasks.py.good && echo 'raise RuntimeError(\"bad release 42\")' >> {tasks}")
    try:
        crash = {**PLAYS["plain-celery"], "dhis_celery_health_timeout": 20}
        crash["dhis_celery_workers"] = [{"name": "default", "queues": ["celery"], "concurrency": 1}]
        result = play(host.backend.get_hostname(), crash, env=MITOGEN)
        output = result.stdout + result.stderr
        assert result.returncode != 0, output[-3000:]
        assert re.search(r"celery-worker@default\.service: .*RuntimeError: bad release 42", output), output[-3000:]
    finally:
        host.run(f"cp /root/tasks.py.good {tasks}")
    result = play(host.backend.get_hostname(), PLAYS["plain-celery"], env=MITOGEN)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


OPS_PLAYBOOK = """---
- name: Our own play, with the role from the collection
  hosts: dhis_celery
  become: true
  roles:
    - role: dhis2.celery.dhis_celery
"""


def ops_repository(host: Any, directory: Path, variables: dict) -> dict[str, str]:
    """The ops team's own repository: its ansible.cfg (no roles_path, no Mitogen), an inventory
    naming this host, and the collection installed from the built artifact into ./collections.
    Returns the environment to run its commands in: nothing of this repository's settings."""
    artifacts = directory / "dist"
    subprocess.run(
        ["ansible-galaxy", "collection", "build", str(ROOT), "--output-path", str(artifacts)],
        check=True,
        capture_output=True,
    )
    (artifact,) = artifacts.glob("dhis2-celery-*.tar.gz")
    (directory / "ansible.cfg").write_text("[defaults]\ncollections_path = ./collections\ninventory = inventory.yml\n")
    (directory / "requirements.yml").write_text(f"---\ncollections:\n  - name: {artifact}\n    type: file\n")
    hosts = {host.backend.get_hostname(): {"ansible_connection": "community.docker.docker"}}
    (directory / "inventory.yml").write_text(json.dumps({"dhis_celery": {"hosts": hosts, "vars": variables}}))
    (directory / "our_site.yml").write_text(OPS_PLAYBOOK)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MOLECULE_"))}
    env.update(ANSIBLE_CONFIG=str(directory / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    install = ["ansible-galaxy", "collection", "install", "-r", "requirements.yml"]
    subprocess.run(install, cwd=directory, env=env, check=True, capture_output=True)
    return env


def test_an_ops_repository_converges_through_the_built_collection(host: Any, tmp_path: Path) -> None:
    """Its own playbook applies dhis2.celery.dhis_celery with a changed worker setting (a
    restart), then `ansible-playbook dhis2.celery.site` puts the setting back: both converge
    through the collection alone and pass the health gate."""
    inventory = {k: v for k, v in host.ansible.get_variables().items() if k.startswith("dhis_celery_")}
    # The CA as the ops inventory holds it (PEM text, the key from its vault), not a lookup of
    # this scenario's directory.
    ca = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "tls"
    inventory |= {
        "dhis_celery_tls_ca_cert": (ca / "ca.pem").read_text(),
        "dhis_celery_tls_ca_key": (ca / "ca.key").read_text(),
    }
    env = ops_repository(host, tmp_path, {**inventory, **PLAYS["shop-celery"]})
    unit = "shop-worker@main.service"
    settings = "/etc/shop-celery/python/dhis_celery_settings.py"
    started = host.run(f"systemctl show -p ActiveEnterTimestampMonotonic --value {unit}").stdout
    for playbook, value in (("our_site.yml", 321), ("dhis2.celery.site", None)):
        extra = json.dumps({"dhis_celery_settings": {"worker_max_tasks_per_child": value}} if value else {})
        run = subprocess.run(
            ["ansible-playbook", playbook, "-e", extra], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        output = run.stdout + run.stderr
        assert run.returncode == 0, output[-3000:]
        # The role's tasks are named by the collection's role, and the gate ran.
        gate = r"TASK \[dhis2\.celery\.dhis_celery : Gate \| Restart what changed, then prove"
        assert re.search(gate, output), output[-3000:]
        assert re.search(r"changed=[1-9]", output), output[-3000:]
        assert ("worker_max_tasks_per_child" in host.file(settings).content_string) == bool(value)
        restarted = host.run(f"systemctl show -p ActiveEnterTimestampMonotonic --value {unit}").stdout
        assert restarted != started, f"{playbook} did not restart {unit}"
        started = restarted


BEATS = ("celery-beat.service", "shop-beat.service", "wired-beat.service")
QUEUES_HELPER = "/usr/local/lib/dhis-celery/dhis_celery_queues.py"


def held(host: Any) -> dict:
    """What the running broker holds, every database (the role's own counter, as its admin)."""
    spec = {"host": "127.0.0.1", "port": 6379, "user": setting(host, "dhis_celery_redis_admin_user")}
    spec |= {"tls_ca_file": TLS_CA} if setting(host, "dhis_celery_redis_tls") else {}
    command = f"python3 -I {QUEUES_HELPER} {shlex.quote(json.dumps({**spec, 'all_databases': True}))}"
    result = host.run(f"printf '%s\\n' {shlex.quote(setting(host, 'dhis_celery_redis_admin_password'))} | {command}")
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def switch(host: Any, flavor: str) -> None:
    """The README's procedure: Beat stopped, queues drained, site.yml with the new flavour."""
    host.run("systemctl stop " + " ".join(BEATS))
    try:
        assert wait_for(lambda: held(host)["total"] + held(host)["unacked"] == 0, timeout=60), held(host)
        result = play(host.backend.get_hostname(), {**PLAYS["plain-celery"], "dhis_celery_redis_flavor": flavor})
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    finally:
        host.run("systemctl start " + " ".join(BEATS))
    other = "redis" if flavor == "valkey" else "valkey"
    for unit in (f"{flavor}-server.service", f"{flavor}-server@cache.service"):
        assert host.service(unit).is_running and host.service(unit).is_enabled, unit
    for unit in (f"{other}-server.service", f"{other}-server@cache.service"):
        assert not host.service(unit).is_running and not host.service(unit).is_enabled, unit
    assert f"{flavor}_version:" in admin_redis(host, 6379, "INFO", "server")
    assert f"{flavor}_version:" in admin_redis(host, 6380, "INFO", "server")
    # Every project's clients followed: the plain project's units were not even restarted.
    for cli, app in SHAPES.items():
        assert django(host, cli, f"from {app}.tasks import add\nprint(add.delay(2, 3).get(timeout=60))") == "5", cli


def test_the_broker_and_the_cache_run_on_valkey(host: Any) -> None:
    """The scenario's flavour: valkey-server holds the broker and the cache, redis-server is not
    installed; the role's clients (redis-cli, the Python clients of every project) work with it."""
    for unit in ("valkey-server.service", "valkey-server@cache.service"):
        assert host.service(unit).is_running and host.service(unit).is_enabled, unit
    assert not host.package("redis-server").is_installed
    assert "valkey_version:" in admin_redis(host, 6379, "INFO", "server")
    assert "valkey_version:" in admin_redis(host, 6380, "INFO", "server")


def test_a_flavour_switch_waits_for_a_drained_broker_then_moves_every_project(host: Any) -> None:
    """1. A task waits in another project's database (the wired worker stopped): the switch to
    Redis, run with the plain project's variables, is refused before any change, naming
    dhis_celery_redis_flavor. 2. Drained, the switch goes through: redis-server holds the broker
    and the cache, valkey-server is stopped and disabled, every project's tasks run. 3. Back to
    Valkey the same way."""
    name = host.backend.get_hostname()
    host.run("systemctl stop wired-worker@default.service")
    try:
        django(host, "wired-celery", "from orders.tasks import add\nadd.delay(1, 1)\nprint('sent')")
        assert wait_for(lambda: held(host)["total"] > 0, timeout=10), held(host)
        refused = play(name, {**PLAYS["plain-celery"], "dhis_celery_redis_flavor": "redis"})
        output = refused.stdout + refused.stderr
        assert refused.returncode != 0, output[-3000:]
        assert re.search(r"dhis_celery_redis_flavor: switching to redis .* holds [1-9]\d* waiting message", output), (
            output[-3000:]
        )
        assert re.search(r"changed=0 ", output.split("PLAY RECAP")[-1]), output[-3000:]
        assert not host.package("redis-server").is_installed
        assert host.service("valkey-server.service").is_running
    finally:
        host.run("systemctl start wired-worker@default.service")
    switch(host, "redis")
    switch(host, "valkey")


PTH = (
    "import os; exec(\"if os.getuid() == 0:\\n open('/var/tmp/dhis-pth-root', 'a').close()"
    "\\nelif os.access('/srv/plain', os.W_OK):\\n open('/srv/plain/.pth-ran', 'a').close()\")\n"
)


def test_root_never_runs_planted_code_and_no_secret_shows(host: Any) -> None:
    """A .pth file in the app-owned venv runs in every Python of that venv: it must run as the
    application user during a converge, verify, ops and a rollback, and never as root. The same
    runs, at -vvv with --diff, through Mitogen and through the linear strategy, print no secret:
    not the Redis or Flower passwords, not a dhis_celery_environment value (raw or JSON-escaped).
    Last in this file: the rollback takes the plain project back to threads."""
    site = host.run("ls -d /srv/plain/venv/lib/python3*/site-packages").stdout.strip()
    host.run("rm -f /var/tmp/dhis-pth-root /srv/plain/.pth-ran")
    host.run(f"printf %s {shlex.quote(PTH)} | runuser -u plainapp -- tee {site}/zz_probe.pth >/dev/null")
    plain = PLAYS["plain-celery"]
    secrets = [
        setting(host, "dhis_celery_redis_password"),
        setting(host, "dhis_celery_flower_users")[0]["password"],
        plain["dhis_celery_environment"]["HARD_VALUE"],
    ]
    forms = [
        form
        for value in secrets
        for form in (value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1])
    ]
    name = host.backend.get_hostname()
    try:
        for playbook, extra, env in (
            ("playbooks/site.yml", {}, MITOGEN),
            ("playbooks/site.yml", {}, LINEAR),
            ("playbooks/verify.yml", {}, MITOGEN),
            ("playbooks/ops.yml", {"dhis_celery_ops_action": "restart"}, LINEAR),
            ("playbooks/rollback.yml", {"dhis_celery_rollback_force": True}, MITOGEN),
        ):
            result = play(name, {**plain, **extra}, "-vvv", "--diff", playbook=playbook, env=env)
            output = result.stdout + result.stderr
            assert result.returncode == 0, (playbook, output[-3000:])
            assert not host.file("/var/tmp/dhis-pth-root").exists, f"root ran the planted .pth during {playbook}"
            shown = [form for form in forms if form in output]
            assert not shown, f"{playbook} ({env['ANSIBLE_STRATEGY']}) printed a secret"
        assert host.file("/srv/plain/.pth-ran").exists, "the planted .pth never ran: the test proves nothing"
    finally:
        host.run(f"rm -f {site}/zz_probe.pth")
