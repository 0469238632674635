"""The Molecule scenarios share one base (.config/molecule/config.yml): each scenario's file
states only what differs from it, and every scenario, merged as Molecule merges it, still gets the
shared settings (no prerun, the collection path, systemd hosts, test secrets, testinfra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from molecule import util

ROOT = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((ROOT / ".config/molecule/config.yml").read_text())
SCENARIOS = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))


def scenario(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "molecule" / name / "molecule.yml").read_text()) or {}


def restated(base: Any, own: Any, path: str = "") -> list[str]:
    """Keys a scenario sets to the value the base already gives them (lists compare whole)."""
    if isinstance(base, dict) and isinstance(own, dict):
        return [p for k, v in own.items() if k in base for p in restated(base[k], v, f"{path}.{k}")]
    return [path] if base == own else []


def test_there_are_scenarios_and_a_base() -> None:
    assert {"default", "cluster", "rollback", "shapes"} <= set(SCENARIOS)
    assert BASE["platforms"] and BASE["provisioner"]["inventory"]["group_vars"]["all"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_a_scenario_states_only_what_differs_from_the_base(name: str) -> None:
    assert restated(BASE, scenario(name)) == []


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_merged_scenario_keeps_the_shared_settings(name: str) -> None:
    merged = util.merge_dicts(BASE, scenario(name))
    assert merged["prerun"] is False
    assert merged["driver"]["name"] == "docker"
    assert merged["verifier"]["name"] == "testinfra"
    # Molecule quotes each option into pytest's command line: a number there crashes it.
    assert all(isinstance(v, (str, bool)) for v in merged["verifier"]["options"].values())
    env = merged["provisioner"]["env"]
    assert env["ANSIBLE_COLLECTIONS_PATH"] == "${MOLECULE_PROJECT_DIRECTORY}/collections"
    assert env["ANSIBLE_STRATEGY"] in {"linear", "mitogen_linear"}
    secrets = merged["provisioner"]["inventory"]["group_vars"]["all"]
    assert {"dhis_celery_redis_password", "dhis_celery_redis_admin_password", "dhis_celery_flower_users"} <= set(
        secrets
    )
    for platform in merged["platforms"]:
        # The systemd host settings a restated platform list must carry (ENVIRONMENT.md).
        assert platform["command"] == "/lib/systemd/systemd", platform["name"]
        assert platform["cgroupns_mode"] == "host", platform["name"]
        assert "/sys/fs/cgroup:/sys/fs/cgroup:rw" in platform["volumes"], platform["name"]
        assert {"/run", "/run/lock"} <= set(platform["tmpfs"]), platform["name"]
