"""The collection dhis2.celery as another repository gets it: built from this tree with the role,
the playbooks and the plugin and nothing of the test harness or its secrets; installed from a git
URL at a tag, its playbooks, role and filters resolve by their full names under the consumer's
own ansible.cfg. (molecule/shapes converges a host through the built artifact.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins/filter"))
from dhis_celery_plan import systemd_env_quote

ROOT = Path(__file__).resolve().parents[1]
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
PLAYBOOKS = ("site", "deploy", "rollback", "verify", "ops")
# Top-level paths that must never ship: test hosts and projects, local state, this repository's
# inventories (the dev one holds its vault password) and the link that makes the tree a collection.
NEVER_SHIPPED = {".venv", ".demo", ".cache", ".ansible", ".ci", ".config", "collections", "examples", "inventories"}
NEVER_SHIPPED |= {"molecule", "scripts", "tests", "ansible.cfg", "site.yml", "Makefile"}


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{command}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run(["ansible-galaxy", "collection", "build", str(ROOT), "--output-path", str(out)], cwd=ROOT)
    (path,) = out.glob("dhis2-celery-*.tar.gz")
    return path


def members(artifact: Path) -> dict[str, bytes]:
    with tarfile.open(artifact) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_the_artifact_holds_the_role_the_playbooks_and_the_plugin(artifact: Path) -> None:
    names = set(members(artifact))
    required = {f"playbooks/{name}.yml" for name in PLAYBOOKS} | {
        "roles/dhis_celery/tasks/main.yml",
        "roles/dhis_celery/meta/argument_specs.yml",
        "roles/dhis_celery/files/dhis_celery_run.py",
        "plugins/filter/dhis_celery_plan.py",
        "meta/runtime.yml",
    }
    assert required <= names, sorted(required - names)


def test_the_artifact_holds_no_test_host_local_state_or_vault_password(artifact: Path) -> None:
    content = members(artifact)
    shipped = sorted(name for name in content if name.split("/")[0] in NEVER_SHIPPED or "__pycache__" in name)
    assert not shipped, shipped
    secrets = [(ROOT / "inventories/dev/vault-password.txt").read_text().strip()]
    secrets += [p.read_text().strip() for p in (ROOT / ".demo").glob("*") if p.is_file()]
    assert all(secrets), "an empty secret would match everything"
    leaked = [name for name, data in content.items() for secret in secrets if secret.encode() in data]
    assert not leaked, leaked


def test_the_version_is_semantic_and_the_changelog_describes_it(artifact: Path) -> None:
    manifest = json.loads(members(artifact)["MANIFEST.json"])
    version = manifest["collection_info"]["version"]
    assert version == GALAXY["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert re.search(rf"^## {re.escape(version)} ", (ROOT / "CHANGELOG.md").read_text(), re.M)


def consumer(directory: Path) -> dict[str, str]:
    """An ops repository's own settings: its collections only, nothing of this repository's."""
    directory.mkdir()
    (directory / "ansible.cfg").write_text("[defaults]\ncollections_path = ./collections\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    return {**env, "ANSIBLE_CONFIG": str(directory / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}


def test_installed_from_a_git_tag_everything_resolves_by_its_full_name(tmp_path: Path) -> None:
    # A clone tagged as a release is tagged (the README's requirements.yml, with a local URL).
    source = tmp_path / "dhis-celery"
    run(["git", "clone", "--quiet", str(ROOT), str(source)], cwd=tmp_path)
    tag = f"v{GALAXY['version']}"
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "tag", tag], cwd=source)
    ops = tmp_path / "ops"
    env = consumer(ops)
    requirements = {"collections": [{"name": f"git+file://{source}", "type": "git", "version": tag}]}
    (ops / "requirements.yml").write_text(yaml.safe_dump(requirements))
    installed = run(["ansible-galaxy", "collection", "install", "-r", "requirements.yml"], cwd=ops, env=env)
    assert f"dhis2.celery:{GALAXY['version']} was installed successfully" in installed
    assert (ops / "collections/ansible_collections/dhis2/celery/roles/dhis_celery/tasks/main.yml").is_file()
    (ops / "our_site.yml").write_text(
        "- name: Ours\n  hosts: all\n  roles:\n    - role: dhis2.celery.dhis_celery\n"
        "- name: Theirs\n  ansible.builtin.import_playbook: dhis2.celery.verify\n"
    )
    for playbook in ["our_site.yml", *(f"dhis2.celery.{name}" for name in PLAYBOOKS)]:
        run(["ansible-playbook", "-i", "localhost,", "--syntax-check", playbook], cwd=ops, env=env)
    listed = run(["ansible-doc", "-t", "filter", "-l", "dhis2.celery"], cwd=ops, env=env)
    documented = set(re.findall(r"^dhis2\.celery\.(\w+)", listed, re.M))
    assert documented == {
        "dhis_celery_plan",
        "dhis_celery_env_quote",
        "dhis_celery_py",
        "dhis_celery_fingerprint",
        "dhis_celery_redis_reached_remotely",
    }, listed
    modules = run(["ansible-doc", "-t", "module", "-l", "dhis2.celery"], cwd=ops, env=env)
    assert set(re.findall(r"^dhis2\.celery\.(\w+)", modules, re.M)) == {"dhis_celery_converged"}, modules
    # A filter of the collection's plugin, called from the consumer's playbook.
    value = 'a "b" $c ; é'
    (ops / "quote.yml").write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Quote",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "vars": {"ansible_python_interpreter": sys.executable},
                    "tasks": [
                        {
                            "name": "Write the quoted value",
                            "ansible.builtin.copy": {
                                "content": "{{ value | dhis2.celery.dhis_celery_env_quote }}",
                                "dest": str(tmp_path / "quoted"),
                                "mode": "0600",
                            },
                        }
                    ],
                }
            ]
        )
    )
    run(["ansible-playbook", "-i", "localhost,", "quote.yml", "-e", json.dumps({"value": value})], cwd=ops, env=env)
    assert (tmp_path / "quoted").read_text() == systemd_env_quote(value)
