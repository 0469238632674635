#!/usr/bin/python
"""The record of the last full run of the role dhis2.celery.dhis_celery on a host, and the
check that nothing it installed has moved since (the fast path of a no-change run).

`record` keeps, after a full run passed its health gate: the run's fingerprint (every input of
every host of the play and the role's own files, hashed on the controller), and a digest of what
the run left on the host: the files under the recipe's roots (content, mode, owner), the state of
its units, the versions of its Debian packages, the virtualenv's distributions and the project's
Python files and environment files (size and time of change). `check` recomputes that digest
from the recorded recipe and says whether the host is as the last full run left it, and if not,
what moved. `absent` forgets the record: a full run does so before it changes anything, so that a
run that fails half-way never leaves a record behind.

Pure Python apart from main(): tests/test_converged.py checks it on the controller.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import stat
import subprocess
import tempfile
from collections.abc import Callable
from typing import Any

DOCUMENTATION = r"""
module: dhis_celery_converged
short_description: Record and check what the last full run of dhis_celery left on a host
version_added: 2.1.0
author: dhis-celery team
description:
  - C(record) writes the run's fingerprint and a digest of the host (files, units, packages,
    virtualenv, project files) to O(path); C(check) compares; C(absent) removes the record.
options:
  path:
    description: The record's file (root only, 0600).
    type: path
    required: true
  state:
    description: What to do.
    type: str
    choices: [check, record, absent]
    default: check
  fingerprint:
    description: The controller's hash of every input of the run (C(check) and C(record)).
    type: str
    default: ""
  recipe:
    description:
      - What the digest covers (C(record); C(check) reads it from the record).
      - Keys C(roots) (paths or glob patterns; a directory counts with all it holds),
        C(units), C(packages), C(venv) and C(app) (directories whose C(*.py) files count),
        C(app_exclude).
    type: dict
    default: {}
"""

RETURN = r"""
fresh:
  description: The record exists, its fingerprint is the one given and the host is as the record says.
  type: bool
  returned: state is check
reasons:
  description: What differs, one line each (empty when fresh).
  type: list
  elements: str
  returned: state is check
"""

Runner = Callable[[list[str]], str]
DPKG_STATUS = "/var/lib/dpkg/status"


def _file_entry(path: str) -> str:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "missing"
    kind = stat.S_IFMT(info.st_mode)
    head = f"{oct(stat.S_IMODE(info.st_mode))} {info.st_uid}:{info.st_gid}"
    if kind == stat.S_IFLNK:
        return f"{head} -> {os.readlink(path)}"
    if kind == stat.S_IFDIR:
        return f"{head} dir"
    if kind != stat.S_IFREG:
        # Never opened: a FIFO put where a file was expected would hang root here.
        return f"{head} type {kind:o}"
    with open(path, "rb") as handle:
        return f"{head} {hashlib.sha256(handle.read()).hexdigest()}"


def files(roots: list[str]) -> dict[str, str]:
    """Every path under the roots (glob patterns allowed): mode, owner and content hash."""
    found: dict[str, str] = {}
    for root in roots:
        matches = sorted(glob.glob(root)) if glob.has_magic(root) else [root]
        for match in matches:
            found[match] = _file_entry(match)
            if os.path.isdir(match) and not os.path.islink(match):
                for directory, subdirs, names in os.walk(match):
                    # Python writes bytecode beside the settings it imports, after the record.
                    subdirs[:] = sorted(d for d in subdirs if d != "__pycache__")
                    for name in subdirs + sorted(names):
                        path = os.path.join(directory, name)
                        found[path] = _file_entry(path)
    return found


def python_files(roots: list[str], exclude: list[str]) -> dict[str, str]:
    """The project's *.py files (a deployment changes them): size and time of change, no read.
    An excluded directory (the virtualenv, a data directory) is skipped unless a root lies in it;
    so are hidden directories (.git), __pycache__ and node_modules."""
    skip = tuple(
        os.path.normpath(e) + os.sep
        for e in exclude
        if e and not any((os.path.normpath(r) + os.sep).startswith(os.path.normpath(e) + os.sep) for r in roots)
    )
    found: dict[str, str] = {}
    for root in roots:
        for directory, subdirs, names in os.walk(root):
            subdirs[:] = sorted(
                d
                for d in subdirs
                if d not in ("__pycache__", "node_modules")
                and not d.startswith(".")
                and not (os.path.join(directory, d) + os.sep).startswith(skip)
            )
            for name in sorted(names):
                if name.endswith(".py"):
                    info = os.stat(os.path.join(directory, name))
                    found[os.path.join(directory, name)] = f"{info.st_size} {info.st_mtime_ns}"
    return found


def distributions(venv: str) -> list[str]:
    """What the virtualenv holds: its pyvenv.cfg and the names in site-packages (a pip install or
    uninstall changes a *.dist-info name)."""
    if not venv:
        return []
    found = sorted(os.path.basename(p) for p in glob.glob(os.path.join(venv, "lib", "python*", "site-packages", "*")))
    cfg = os.path.join(venv, "pyvenv.cfg")
    return [_file_entry(cfg), *found]


def packages(names: list[str], status_file: str = DPKG_STATUS) -> dict[str, str]:
    """Status and version of each named Debian package, read from dpkg's database."""
    wanted, seen = set(names), {name: [] for name in names}
    try:
        with open(status_file, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except FileNotFoundError:
        text = ""
    for stanza in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line.startswith(" "))
        if fields.get("Package") in wanted:
            seen[fields["Package"]].append(" ".join(fields.get(k, "") for k in ("Architecture", "Status", "Version")))
    return {name: "; ".join(sorted(entries)) or "not installed" for name, entries in seen.items()}


def systemctl_show(units: list[str]) -> str:
    result = subprocess.run(
        ["systemctl", "show", "--property=Id,ActiveState,UnitFileState", "--", *units],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout


def unit_states(units: list[str], show: Runner = systemctl_show) -> dict[str, str]:
    """ActiveState and UnitFileState of each unit, in one systemctl call."""
    if not units:
        return {}
    states: dict[str, str] = {}
    for block, unit in zip(show(units).strip().split("\n\n"), units, strict=False):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        states[unit] = f"{fields.get('ActiveState', '?')} {fields.get('UnitFileState', '')}".strip()
    return states


def digest(recipe: dict[str, Any], show: Runner = systemctl_show, status_file: str = DPKG_STATUS) -> dict[str, Any]:
    """What the host holds now, by the recipe's parts."""
    return {
        "files": files(list(recipe.get("roots") or [])),
        "units": unit_states(list(recipe.get("units") or []), show),
        "packages": packages(list(recipe.get("packages") or []), status_file),
        "venv": distributions(str(recipe.get("venv") or "")),
        "app": python_files(list(recipe.get("app") or []), list(recipe.get("app_exclude") or [])),
    }


def differences(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """One line per part that moved, naming the first few paths, units or packages."""
    reasons = []
    for part in ("files", "units", "packages", "app"):
        before, after = recorded.get(part) or {}, now.get(part) or {}
        moved = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        if moved:
            more = f" and {len(moved) - 3} more" if len(moved) > 3 else ""
            reasons.append(f"{part}: {', '.join(moved[:3])}{more}")
    if recorded.get("venv") != now.get("venv"):
        reasons.append("venv: the virtualenv's distributions changed")
    return reasons


def check(path: str, fingerprint: str, show: Runner = systemctl_show, status_file: str = DPKG_STATUS) -> list[str]:
    """Why this host needs a full run; empty when it is as the last full run left it."""
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return ["no record of a full run that passed its health gate"]
    if record.get("fingerprint") != fingerprint:
        return ["the inputs (a dhis_celery_* variable, a fact or group the role reads) or the role itself changed"]
    return differences(record.get("digest") or {}, digest(record.get("recipe") or {}, show, status_file))


def record(
    path: str, fingerprint: str, recipe: dict[str, Any], show: Runner = systemctl_show, status_file: str = DPKG_STATUS
) -> None:
    """Write the record atomically, root only."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    content = {"fingerprint": fingerprint, "recipe": recipe, "digest": digest(recipe, show, status_file)}
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".converged-")
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(content, handle, sort_keys=True)
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


def main() -> None:
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "state": {"type": "str", "choices": ["check", "record", "absent"], "default": "check"},
            # A hash over every input, secrets included: kept out of Ansible's output at any
            # verbosity, so a weak password cannot be guessed offline from a log.
            "fingerprint": {"type": "str", "default": "", "no_log": True},
            "recipe": {"type": "dict", "default": {}},
        },
        supports_check_mode=True,
    )
    path, state = module.params["path"], module.params["state"]
    # The record is the role's bookkeeping, not configuration: writing or removing it is never
    # reported as a change (an idempotent run stays at changed=0).
    if state == "check":
        reasons = check(path, module.params["fingerprint"])
        module.exit_json(changed=False, fresh=not reasons, reasons=reasons)
    if not module.check_mode:
        if state == "record":
            record(path, module.params["fingerprint"], module.params["recipe"])
        elif os.path.exists(path):
            os.remove(path)
    module.exit_json(changed=False)


if __name__ == "__main__":
    main()
