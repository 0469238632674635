"""Ansible's linear strategy run through Mitogen, the strategy ansible.cfg selects.

Mitogen keeps one Python interpreter per host for the whole run instead of starting one per
task, which cuts a no-change run of playbooks/site.yml to about a third (docs/PERFORMANCE.md).
The package comes from requirements.txt; this file only saves ansible.cfg a path into the
virtualenv. Without the package the run falls back, with a warning, to the plain linear
strategy: same result, slower. `ANSIBLE_STRATEGY=linear` turns Mitogen off for one run.
"""

from __future__ import annotations

try:
    from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule
except ImportError:
    from ansible.plugins.strategy.linear import StrategyModule
    from ansible.utils.display import Display

    Display().warning(
        "Mitogen is not installed (pip install -r requirements.txt): running Ansible's plain linear strategy."
    )

__all__ = ["StrategyModule"]
