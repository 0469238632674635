"""The ops inventories and the checks that span hosts, run on the controller: no host is contacted."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENVS = ["dev", "staging", "production"]
DEV_VAULT = ["--vault-password-file", "inventories/dev/vault-password.txt"]


def ansible(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    env["ANSIBLE_FORCE_COLOR"] = "0"
    return subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("env", ENVS)
def test_inventory_graph(env: str) -> None:
    result = ansible("ansible-inventory", "-i", f"inventories/{env}", "--graph")
    assert result.returncode == 0, result.stderr
    assert "@dhis_celery:" in result.stdout


def test_production_checks_every_host_then_rolls_out_in_one_play() -> None:
    result = ansible("ansible-playbook", "-i", "inventories/production", "playbooks/site.yml", "--list-hosts")
    assert result.returncode == 0, result.stderr
    hosts = [play.split("):\n", 1)[1].split() for play in result.stdout.split("play #")[1:]]
    everyone = [
        "dhis-prd-redis-01.example.org",
        "dhis-prd-ops-01.example.org",
        "dhis-prd-worker-sync-01.example.org",
        "dhis-prd-worker-monitor-01.example.org",
        "dhis-prd-web-01.example.org",
        "dhis-prd-web-02.example.org",
    ]
    # Every host is checked first, then one play applies the role to all of them at once.
    assert [sorted(play) for play in hosts] == [sorted(everyone)] * 2
    # Lock-step, so Redis and the migrations come before any host's services; the restarts go
    # one host at a time and the first failure stops the rollout.
    rolling = yaml.safe_load((ROOT / "playbooks/site.yml").read_text())[1]
    assert "serial" not in rolling and rolling["max_fail_percentage"] == 0 and rolling["force_handlers"] is True
    assert "strategy" not in rolling
    assert rolling["roles"] == [{"role": "dhis_celery", "dhis_celery_rolling_restart": True}]


# The test inventories' hosts do not exist: they are reached with the local connection, so
# the checks run for real on the controller, where the role must change nothing.
LOCAL = [
    "-e",
    "ansible_connection=local",
    "-e",
    "ansible_become=false",
    "-e",
    "ansible_python_interpreter={{ ansible_playbook_python }}",
]


def changed(output: str) -> list[int]:
    return [int(n) for n in re.findall(r"changed=(\d+)", output.split("PLAY RECAP")[-1])]


@pytest.mark.parametrize(
    ("inventory", "message"),
    [
        ("tests/inventories/two_beats.yml", "Beat would run on 2 hosts (beat-a.invalid, beat-b.invalid)"),
        ("tests/inventories/unconsumed_queue.yml", "Queue(s) ['monitor'] are routed to"),
    ],
)
def test_inventory_wide_mistakes_are_refused_before_any_change(inventory: str, message: str) -> None:
    result = ansible("ansible-playbook", "-i", inventory, "playbooks/site.yml")
    assert result.returncode != 0
    assert message in result.stdout, result.stdout[-3000:]
    # Refused in the first play, on every host at once, before the per-host probe.
    assert changed(result.stdout) and set(changed(result.stdout)) == {0}
    assert "Probe the Django project" not in result.stdout


@pytest.mark.parametrize("env", ["staging", "production"])
def test_template_vaults_refuse_to_run_until_filled(env: str) -> None:
    result = ansible("ansible-playbook", "-i", f"inventories/{env}", "playbooks/site.yml", *LOCAL)
    assert result.returncode != 0
    assert f"inventories/{env}/group_vars/dhis_celery/vault.yml is still the template" in result.stdout
    assert set(changed(result.stdout)) == {0}


def test_production_passes_the_checks_that_span_hosts() -> None:
    secrets = {
        f"vault_dhis_celery_{k}_password": f"filled-{k}-0123456789" for k in ["redis", "redis_admin", "flower_ops"]
    }
    secrets["vault_dhis_celery_tls_ca_cert"] = "-----BEGIN CERTIFICATE-----\nfilled\n-----END CERTIFICATE-----\n"
    secrets["vault_dhis_celery_tls_ca_key"] = "-----BEGIN PRIVATE KEY-----\nfilled\n-----END PRIVATE KEY-----\n"
    filled = ["-e", json.dumps(secrets)]
    result = ansible("ansible-playbook", "-i", "inventories/production", "playbooks/site.yml", *LOCAL, *filled)
    assert (
        "ok: [dhis-prd-redis-01.example.org] => (item=Beat would run on 1 hosts (dhis-prd-ops-01.example.org)"
        in result.stdout
    )
    assert not re.search(r"failed: .*(Queue\(s\)|Beat would run)", result.stdout), result.stdout[-3000:]
    # The controller is not a DHIS2 host: the per-host probe stops the run there, changing nothing.
    assert result.returncode != 0 and "dhis_celery_user: no user 'dhis'" in result.stdout
    assert set(changed(result.stdout)) == {0}


def test_dev_vault_opens_with_the_documented_test_password() -> None:
    assert (ROOT / "inventories/dev/group_vars/dhis_celery/vault.yml").read_text().startswith("$ANSIBLE_VAULT;")
    result = ansible(
        "ansible", "-i", "inventories/dev", "dhis_celery", *DEV_VAULT, "-m", "ansible.builtin.debug",
        "-a", "msg={{ [dhis_celery_redis_password, dhis_celery_redis_admin_password] | map('length') | min >= 16 }}",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"msg": true' in result.stdout
