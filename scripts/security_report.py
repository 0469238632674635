"""make security-report: `systemd-analyze security` for the units the role writes, Debian's Redis
units and the guide's literal units, on the demo host (make demo runs first).

The guide's units are the ones scripts/bench/guide.sh writes (its single copy of the guide's text),
installed under guide-* names, loaded and never started, then removed. The raw results go to
docs/security-report.json; the figures and the conclusion in docs/SECURITY.md between the
generated-section markers are written from them, and the default scenario's tests compare the
converged hosts' scores with that file.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The demo host by default (make security-report runs make demo first); any host converged with
# the role's defaults will do (DHIS_SECURITY_HOST=dhis-celery-bookworm after `molecule converge`).
HOST = os.environ.get("DHIS_SECURITY_HOST", "dhis-celery-demo")
REPORT = ROOT / "docs/security-report.json"
DOC = ROOT / "docs/SECURITY.md"
BEGIN, END = "<!-- security-report: begin -->", "<!-- security-report: end -->"
ROLE_UNITS = [
    "celery-worker@default.service",
    "celery-beat.service",
    "celery-flower.service",
    "celery-liveness.service",
    "celery-queue-metrics.service",
]
DEBIAN_UNITS = ["redis-server.service", "redis-server@cache.service"]
# What guide.sh substitutes into the guide's text; the report puts the guide's own placeholders back.
GUIDE_VALUES = {"$app": "/path/to/dhis_sync", "$venv": "/path/to/venv", "$env_file": "/path/to/dhis_sync/.env"}


def on_host(*command: str, stdin: str | None = None) -> str:
    return subprocess.run(
        ["docker", "exec", "-i", HOST, *command], input=stdin, capture_output=True, text=True, check=True
    ).stdout


def guide_units() -> dict[str, str]:
    """The unit files guide.sh writes (`unit NAME <<UNIT ... UNIT`), as the guide prints them."""
    script = (ROOT / "scripts/bench/guide.sh").read_text()
    units = {}
    for name, body in re.findall(r"^unit (\S+) <<UNIT\n(.*?)^UNIT$", script, re.M | re.S):
        for variable, value in GUIDE_VALUES.items():
            body = body.replace(variable, value)
        units[f"guide-{name}.service"] = body.replace("\\\\", "\\").replace("\\$", "$")
    assert len(units) == 3, f"expected the guide's three units in guide.sh, found {sorted(units)}"
    return units


def exposure(unit: str) -> dict:
    out = on_host("systemd-analyze", "security", "--no-pager", unit)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\S+)", out)
    assert match, out
    return {"unit": unit, "score": float(match.group(1)), "label": match.group(2)}


def measure() -> dict:
    guide = guide_units()
    for name, body in guide.items():
        on_host("tee", f"/etc/systemd/system/{name}", stdin=body)
    on_host("systemctl", "daemon-reload")
    try:
        units = {
            "role": [exposure(u) for u in ROLE_UNITS],
            "debian": [exposure(u) for u in DEBIAN_UNITS],
            "guide": [exposure(u) for u in guide],
        }
    finally:
        on_host("rm", "-f", *(f"/etc/systemd/system/{name}" for name in guide))
        on_host("systemctl", "daemon-reload")
    return {
        "command": "make security-report"
        if "DHIS_SECURITY_HOST" not in os.environ
        else f"DHIS_SECURITY_HOST={HOST} .venv/bin/python scripts/security_report.py",
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": {
            "name": HOST,
            "debian": on_host("cat", "/etc/debian_version").strip(),
            "systemd": on_host("systemctl", "--version").splitlines()[0],
            "container": "docker (PrivateUsers off: it cannot work there)",
        },
        "units": units,
    }


def markdown(report: dict) -> str:
    units = report["units"]
    sources = {"role": "the role", "debian": "Debian's package", "guide": "the guide, literally"}
    rows = [
        f"| `{u['unit']}` | {label} | {u['score']:.1f} {u['label']} |" for s, label in sources.items() for u in units[s]
    ]
    role_max = max(u["score"] for u in units["role"])
    guide_min = min(u["score"] for u in units["guide"])
    guide_max = max(u["score"] for u in units["guide"])
    debian_max = max(u["score"] for u in units["debian"])
    if role_max < guide_min:
        verdict = (
            "every unit the role writes is less exposed than every unit of the guide "
            f"({role_max:.1f} at most, against "
            + (f"{guide_min:.1f}" if guide_min == guide_max else f"{guide_min:.1f} to {guide_max:.1f}")
            + ")"
        )
    else:
        verdict = (
            f"a unit of the role scores {role_max:.1f}, not below the guide's best ({guide_min:.1f}): a regression"
        )
    comparison = "at most" if role_max <= debian_max else "above"
    host = report["host"]
    return "\n".join(
        [
            f"Measured {report['measured_at']} by `{report['command']}` on the converged host `{host['name']}` "
            f"(Debian {host['debian']}, {host['systemd']}, {host['container']}); raw results in "
            "`docs/security-report.json`. The guide's units are installed under `guide-*` names from "
            "`scripts/bench/guide.sh`, loaded, never started.",
            "",
            "| Unit | Written by | Exposure (lower is better) |",
            "|---|---|---|",
            *rows,
            "",
            f"Conclusion (computed from the table): {verdict}; the role's units are {comparison} the level of "
            f"Debian's own Redis units ({debian_max:.1f}). `test_unit_exposure_score_is_at_most_the_reported_one` "
            "fails when a converged host's unit scores above this file's figure.",
        ]
    )


def main() -> None:
    report = measure()
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    text = DOC.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n" + markdown(report) + "\n" + text[end:])
    print(markdown(report))


if __name__ == "__main__":
    main()
