"""Generated docs say what their saved raw results say: the section between the markers is
exactly what the generator writes from the JSON beside it (a figure or conclusion typed by hand,
or results saved without regenerating the doc, fail here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import reliability_report  # noqa: E402
import report_test_timings as test_timings  # noqa: E402
import security_report  # noqa: E402


def generated(doc: Path, begin: str, end: str) -> str:
    text = doc.read_text()
    return text[text.index(begin) + len(begin) : text.index(end)].strip()


def test_security_md_figures_are_generated_from_security_report_json() -> None:
    report = json.loads(security_report.REPORT.read_text())
    section = generated(security_report.DOC, security_report.BEGIN, security_report.END)
    assert section == security_report.markdown(report).strip()


def test_the_security_report_measured_every_unit_it_compares() -> None:
    units = json.loads(security_report.REPORT.read_text())["units"]
    assert [u["unit"] for u in units["role"]] == security_report.ROLE_UNITS
    assert [u["unit"] for u in units["debian"]] == security_report.DEBIAN_UNITS
    assert len(units["guide"]) == 3


def test_the_readme_s_timings_are_generated_from_test_timings_json() -> None:
    results = json.loads(test_timings.RESULTS.read_text())
    section = generated(test_timings.README, test_timings.BEGIN, test_timings.END)
    assert section == test_timings.markdown(results).strip()
    assert results["total_seconds"] >= sum(step["seconds"] for step in results["steps"])


def test_reliability_md_is_generated_from_reliability_json() -> None:
    results = json.loads(reliability_report.RESULTS.read_text())
    assert reliability_report.DOC.read_text() == reliability_report.render(results, reliability_report.load_ha())
    assert [row["case"].split(".")[0] for row in results["rows"]] == [str(n) for n in range(1, 9)]


def test_performance_md_and_the_readme_are_generated_from_performance_json() -> None:
    sys.path.insert(0, str(ROOT / "scripts/bench"))
    import bench

    saved = json.loads(bench.SAVED.read_text())
    doc = (ROOT / "docs/PERFORMANCE.md").read_text()
    assert bench.render(saved) in doc
    assert bench.summary(saved) in (ROOT / "README.md").read_text()
    assert "floor" in saved["results"]["converge"], "saved by a bench without Ansible's floor"


def test_the_bench_reads_every_host_of_a_play_recap_and_nothing_else() -> None:
    """The bench refuses a timed run that changed something: it must read each host's line."""
    sys.path.insert(0, str(ROOT / "scripts/bench"))
    import common

    out = (
        "TASK [x] ***\nok: [a]\n\nPLAY RECAP ***\n"
        "a.example : ok=52   changed=0    unreachable=0    failed=0    skipped=41   rescued=0    ignored=0\n"
        "b          : ok=48   changed=3    unreachable=0    failed=1    skipped=45   rescued=0    ignored=0\n"
        "dhis_celery : Packages | Install -- 13.50s\n"
    )
    found = common.recaps(out)
    assert sorted(found) == ["a.example", "b"]
    assert found["b"]["changed"] == 3 and found["b"]["failed"] == 1 and found["a.example"]["skipped"] == 41


def test_a_warm_restart_may_run_its_in_flight_tasks_twice_and_no_more() -> None:
    row = {"sent": 100, "completed": 100, "duplicated": 2, "max_duplicated": 2}
    assert "regression" not in reliability_report.outcome([row])
    assert "regression" in reliability_report.outcome([{**row, "duplicated": 3}])
    assert "regression" in reliability_report.outcome([{**row, "max_duplicated": 0}])
    assert "regression" in reliability_report.outcome([{**row, "completed": 99}])
