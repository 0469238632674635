"""The ops inventories and the checks that span hosts, run on the controller: no host is contacted."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

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


def test_production_rolls_out_broker_then_beat_then_one_host_at_a_time() -> None:
    result = ansible("ansible-playbook", "-i", "inventories/production", "playbooks/site.yml", "--list-hosts")
    assert result.returncode == 0, result.stderr
    hosts = [play.split("):\n", 1)[1].split() for play in result.stdout.split("play #")[1:]]
    assert hosts[0] and len(hosts[0]) == 6  # every host is checked first
    assert hosts[1] == ["dhis-prd-redis-01.example.org"]
    assert hosts[2] == ["dhis-prd-ops-01.example.org"]
    assert sorted(hosts[3]) == sorted(
        [
            "dhis-prd-worker-sync-01.example.org",
            "dhis-prd-worker-monitor-01.example.org",
            "dhis-prd-web-01.example.org",
            "dhis-prd-web-02.example.org",
        ]
    )
    assert "serial: 1" in (ROOT / "playbooks/site.yml").read_text()


@pytest.mark.parametrize(
    ("inventory", "message"),
    [
        ("tests/inventories/two_beats.yml", "Beat would run on 2 hosts (beat-a.invalid, beat-b.invalid)"),
        ("tests/inventories/unconsumed_queue.yml", "Queue(s) ['monitor'] are routed to"),
    ],
)
def test_inventory_wide_mistakes_are_refused_before_any_host_is_contacted(inventory: str, message: str) -> None:
    result = ansible("ansible-playbook", "-i", inventory, "playbooks/site.yml")
    assert result.returncode != 0
    assert message in result.stdout, result.stdout[-3000:]
    # The hosts do not exist: any attempt to reach one would show as UNREACHABLE.
    assert "UNREACHABLE" not in result.stdout


def test_the_production_inventory_passes_the_inventory_checks() -> None:
    result = ansible("ansible-playbook", "-i", "inventories/production", "playbooks/site.yml")
    assert "Beat would run on 1 hosts (dhis-prd-ops-01.example.org)" in result.stdout
    assert not re.search(r"failed: .*Queue\(s\)|failed: .*Beat would run", result.stdout)


@pytest.mark.parametrize("env", ["staging", "production"])
def test_template_vaults_refuse_to_run_until_filled(env: str) -> None:
    result = ansible(
        "ansible", "-i", f"inventories/{env}", "dhis_celery[0]", "-m", "ansible.builtin.debug",
        "-a", "msg={{ dhis_celery_redis_password | length }}",
    )  # fmt: skip
    assert result.returncode != 0
    assert f"inventories/{env}/group_vars/dhis_celery/vault.yml is still the template" in result.stdout + result.stderr


def test_dev_vault_opens_with_the_documented_test_password() -> None:
    assert (ROOT / "inventories/dev/group_vars/dhis_celery/vault.yml").read_text().startswith("$ANSIBLE_VAULT;")
    result = ansible(
        "ansible", "-i", "inventories/dev", "dhis_celery", *DEV_VAULT, "-m", "ansible.builtin.debug",
        "-a", "msg={{ [dhis_celery_redis_password, dhis_celery_redis_admin_password] | map('length') | min >= 16 }}",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"msg": true' in result.stdout
