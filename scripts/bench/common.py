"""What bench.py and cluster.py share: running a command, reading a play recap, Ansible's floor."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def sh(*cmd: str, stdin: str | None = None, check: bool = True, env: dict[str, str] | None = None) -> str:
    """The command's stdout, run from the repository; a failure ends the bench with its output."""
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=ROOT)
    if check and done.returncode != 0:
        sys.exit(f"bench: {shlex.join(cmd)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def recaps(out: str) -> dict[str, dict[str, int]]:
    """Each host's counters in the play recap (ok, changed, skipped...)."""
    return {
        host: {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", counters)}
        for host, counters in re.findall(r"^(\S+)\s*:\s*(ok=\d+.*)$", out, re.M)
    }


# Ansible's floor: what any play costs on the same hosts through the same strategy.
FLOOR = """
- name: Ansible's floor on the role's hosts (facts at their minimum, one ping), same strategy
  hosts: dhis_celery
  gather_facts: false
  tasks:
    - name: Minimal facts
      ansible.builtin.setup:
        gather_subset: [min]
    - name: Ping
      ansible.builtin.ping:
"""
