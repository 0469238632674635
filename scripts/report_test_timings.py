"""make test-timings: the README's `make test` timings from a logged run.

`make test` prints `== STEP took N s` for lint, the controller-side tests and each Molecule
scenario, and `== make test took N s` at the end; `make test 2>&1 | tee .cache/make-test.log`
keeps them. This script reads such a log, saves docs/test-timings.json and rewrites the README's
section between the test-timings markers from it, the verdict on the budget included.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs/test-timings.json"
README = ROOT / "README.md"
BEGIN, END = "<!-- test-timings: begin -->", "<!-- test-timings: end -->"
BUDGET_S, CI_LIMIT_S = 60 * 60, 90 * 60


def parse(log: str) -> dict:
    steps = [{"step": s, "seconds": int(n)} for s, n in re.findall(r"^== (.+?) took (\d+) s$", log, re.M)]
    total = next((s["seconds"] for s in steps if s["step"] == "make test"), None)
    assert total is not None, "no '== make test took N s' line: not the log of a whole make test"
    return {
        "command": "make test 2>&1 | tee .cache/make-test.log; make test-timings",
        "logged_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "steps": [s for s in steps if s["step"] != "make test"],
        "total_seconds": total,
    }


def minutes(seconds: int) -> str:
    return f"{seconds // 60} min {seconds % 60:02d} s"


def markdown(results: dict) -> str:
    total = results["total_seconds"]
    if total <= BUDGET_S:
        verdict = f"within the 60 min budget ({total / BUDGET_S:.0%} of it)"
    elif total <= CI_LIMIT_S:
        verdict = f"over the 60 min budget by {minutes(total - BUDGET_S)}, under CI's 90 min limit"
    else:
        verdict = "over CI's 90 min limit: CI fails"
    rows = [f"| {s['step']} | {s['seconds']} s |" for s in results["steps"]]
    return "\n".join(
        [
            f"Logged `make test` run of {results['logged_at'][:10]} on {results['cores']} cores "
            f"(`docs/test-timings.json`, written by `{results['command']}`):",
            "",
            "| Step | Wall time |",
            "|---|---|",
            *rows,
            f"| **make test** | **{minutes(total)}** |",
            "",
            f"That is {verdict}.",
        ]
    )


def render(results: dict) -> None:
    text = README.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    README.write_text(text[:start] + "\n" + markdown(results) + "\n" + text[end:])


def main() -> None:
    log = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / ".cache/make-test.log")
    results = parse(log.read_text())
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    render(results)
    print(markdown(results))


if __name__ == "__main__":
    main()
