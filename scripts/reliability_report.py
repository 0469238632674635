"""docs/RELIABILITY.md from the fault suite's saved results (docs/reliability.json).

`make reliability` runs molecule/shared/tests/test_reliability.py in its full form; the suite
saves its rows and parameters as JSON and calls render() for the page, so every figure and every
conclusion below the table is computed from those rows. `python scripts/reliability_report.py`
re-renders the page from the saved JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs/reliability.json"
HA_RESULTS = ROOT / "docs/ha.json"
DOC = ROOT / "docs/RELIABILITY.md"


def outcome(rows: list[dict], duplicates_expected: bool = False) -> str:
    """The verdict on a group of rows: a lost task is a regression, and so is a task that ran
    twice, beyond the bound a row allows (`max_duplicated`) unless delivery is at-least-once."""
    lost = sum(r["sent"] - r["completed"] for r in rows)
    doubled = sum(r["duplicated"] for r in rows)
    allowed = sum(r.get("max_duplicated", 0) for r in rows)
    if lost == 0 and doubled == 0:
        return "no task lost, none ran twice"
    parts = [f"{lost} task(s) lost" if lost else "no task lost"]
    if doubled:
        why = " (at-least-once delivery)" if duplicates_expected else f" (at most {allowed} allowed)" if allowed else ""
        parts.append(f"{doubled} ran twice{why}")
    verdict = ", ".join(parts)
    return verdict if lost == 0 and (duplicates_expected or doubled <= allowed) else verdict + ": a regression"


def beat(row: dict) -> str:
    if row["duplicated"]:
        return f"{row['duplicated']} period(s) ran twice: a regression"
    if row["late_seconds"] >= row["slack_seconds"]:
        return (
            f"the first run after the restart came {row['late_seconds']:.1f} s after it was due "
            f"(more than {row['slack_seconds']:.0f} s): a period was skipped, a regression"
        )
    skipped = row["sent"] - row["completed"]
    return (
        "no period ran twice, and the first run after the restart came "
        f"{max(0.0, row['late_seconds']):.1f} s after it was due (or after Beat was up, if later); "
        + (
            f"{skipped} period(s) fell inside the restart and were not replayed"
            if skipped
            else "no period fell inside the restart"
        )
    )


# What docs/ha.json files saved before the test recorded the project's layout measured.
LEGACY_HA_PROJECT = "one host with one prefork worker of concurrency 4, Beat and Redis (the cache, Beat's fence)"


def render_ha(ha: dict) -> list[str]:
    """The RabbitMQ section, from molecule/ha's fault tests (docs/ha.json)."""
    rows = {r["case"].split(".")[0]: r for r in ha["rows"]}
    lines = [
        "## A RabbitMQ broker that loses a node (`ha` scenario)",
        "",
        f"Measured {ha['measured_at']} on {ha['machine']}: three RabbitMQ 3.10 nodes on Debian 12, one "
        "cluster, every task queue a quorum queue (`dhis_celery_broker: rabbitmq`); the project: "
        f"{ha['parameters'].get('project', LEGACY_HA_PROJECT)}. Raw results: `docs/ha.json`. "
        f"Re-run: `make reliability` (the `ha` scenario's fault tests with DHIS_HA_BATCH={ha['parameters']['batch']}).",
        "",
    ]
    if "A" in rows:
        a = rows["A"]
        lost = a["sent"] - a["completed"]
        lines += [
            "| case | sent | completed | lost | ran twice | of those finished before the fault | "
            "workers resumed after (s) | batch done after the fault (s) |",
            "|---|---|---|---|---|---|---|---|",
            f"| {a['case']} | {a['sent']} | {a['completed']} | {lost} | {a['duplicated']} | "
            f"{a['rerun_after_finishing']} | {a['resumed_seconds']:.1f} | {a['seconds']:.1f} |",
            "",
            f"- The leader ({a['leader']}) was stopped with `systemctl stop`, then its container killed, with "
            f"{a['done_before_fault']} of {a['sent']} tasks of {ha['parameters']['work']} s done: "
            + ("no task lost" if lost == 0 else f"{lost} task(s) lost: a regression")
            + (
                ", none of the finished ones ran again"
                if a["rerun_after_finishing"] == 0
                else f", {a['rerun_after_finishing']} finished task(s) ran again: a regression"
            )
            + f". The workers took {a['resumed_seconds']:.1f} s to complete tasks again, on the two nodes left "
            "(the queues elect a new leader among them). Tasks in flight at the fault may run twice "
            f"({a['duplicated']} did): at-least-once, as with Redis. After the batch, Beat's periodic task "
            f"(every 2 s) ran {a['beat_runs_after_batch']} times in {a['beat_watched_seconds']:.0f} s"
            + (": Beat kept scheduling." if a["beat_runs_after_batch"] >= 3 else ": Beat stopped, a regression."),
            "",
        ]
    if "B" in rows:
        b = rows["B"]
        lines += [
            f"- {b['case']}: the task ({b['work_seconds']:.0f} s of work) completed "
            f"{b['completed_after_kill_seconds']:.1f} s after the kill, so it was back in a worker within "
            f"{b['completed_after_kill_seconds'] - b['work_seconds']:.1f} s: RabbitMQ requeues a consumer's "
            "unacknowledged messages when its connection closes, and systemd restarted the worker. With Redis "
            "the same task waits for the visibility timeout (case 3 above: up to an hour in production).",
            "",
        ]
    if "C" in rows:
        c = rows["C"]
        lost = c["sent"] - c["completed"]
        # Files saved before the second batch existed timed the first batch alone.
        second = "second_sent" in c
        lines += [
            f"- {c['case']}: two runs of `site.yml` on the whole inventory, each stopping every node and starting "
            f"them together. Of a first batch of {c['sent']} tasks of {ha['parameters']['work']} s, sent before "
            f"the first run, {c['done_between_the_runs']} were done between the runs"
            + (", none lost" if lost == 0 else f", {lost} lost: a regression")
            + f" ({c['duplicated']} ran twice)."
        ]
        if second:
            second_lost = c["second_sent"] - c["second_completed"]
            lines[-1] += (
                f" A second batch of {c['second_sent']} tasks of {c['second_work']} s, sent between the runs, had "
                f"{c['second_sent'] - c['second_done_when_the_second_run_ended']} tasks not yet done when the second "
                "run (which stops every node) ended: "
                + ("none was lost" if second_lost == 0 else f"{second_lost} were lost, a regression")
                + f" ({c['second_duplicated']} ran twice)."
            )
        lines[-1] += (
            f" {'Both batches' if second else 'The batch'} were done {c['seconds']:.0f} s after the first run began. "
            f"While off, a TLS client with a certificate of the CA got {' / '.join(c['plain_probe'])} from the "
            "distribution port (plain Erlang distribution)."
        )
        lines += [""]
    return lines


def render(results: dict, ha: dict | None = None) -> str:
    rows = {r["case"].split(".")[0]: r for r in results["rows"]}
    p = results["parameters"]
    table = ["| case | sent | completed | lost | duplicated | seconds |", "|---|---|---|---|---|---|"]
    table += [
        f"| {r['case']} | {r['sent']} | {r['completed']} | {r['sent'] - r['completed']} | "
        f"{r['duplicated']} | {r['seconds']:.1f} |"
        for r in results["rows"]
    ]
    meaning = []
    if {"1", "2"} <= rows.keys():
        meaning.append(
            f"- Restarts and deploys (1, 2): {outcome([rows['1'], rows['2']])}. They are warm shutdowns: "
            "running tasks finish, reserved ones go back to the queue. A task that succeeds just as the worker "
            "stops can stay unacknowledged and run again (celery#3802, open: Redis broker, late acks), so each "
            "case allows at most what the worker holds at once (concurrency x prefetch) to run twice."
        )
    if "3" in rows:
        meaning.append(
            f"- A `kill -9` (3): {outcome([rows['3']], duplicates_expected=True)}. It is not a shutdown: Redis "
            "redelivers the tasks the dead worker held after the visibility timeout (3600 s in production, "
            "so they wait up to an hour). A task that finished but was not yet acknowledged runs again: "
            "delivery is at-least-once, so tasks must be idempotent."
        )
    if {"4", "5"} <= rows.keys():
        meaning.append(
            f"- Redis restart and host restart with messages waiting (4, 5): {outcome([rows['4'], rows['5']])}. "
            "The broker persists with RDB + AOF `appendfsync everysec` (at most about one second of writes at "
            "risk on a power cut; `always` closes that gap at a large write cost)."
        )
    if "6" in rows:
        meaning.append(
            f"- Redis outage (6): {outcome([rows['6']])}; the suite also fails if a unit ends `failed`. Broker "
            "connection retries are unlimited, at start-up too."
        )
    if "7" in rows:
        meaning.append(
            f"- Beat restarted (7): {beat(rows['7'])}. What Beat promises across a restart: the "
            "DatabaseScheduler keeps `last_run_at` in the database, so a period overdue when Beat comes back "
            "runs once, at once, and none runs twice; periods that fall inside the downtime are not replayed."
        )
    if "8" in rows:
        meaning.append(
            f"- A code deploy (8, `playbooks/deploy.yml` with a new release marker): {outcome([rows['8']])}. "
            "Workers restart one instance at a time with a warm shutdown, then Beat, Flower and the web unit "
            "(the same bound as 1 and 2 on tasks that ran twice)."
        )
    return "\n".join(
        [
            "# Reliability: the fault suite's figures",
            "",
            f"Measured {results['measured_at']} on {results['machine']}, against the `default` Molecule "
            "scenario's Debian 12 host (one worker instance `default`, prefork, concurrency 2; "
            "`task_acks_late`, `task_reject_on_worker_lost`, prefetch multiplier 1, broker visibility "
            "timeout 3600 s (20 s in case 3 only), warm shutdown within `TimeoutStopSec` = time limit + 60 s, "
            "`KillMode=mixed`; broker persistence RDB + AOF `appendfsync everysec`). Raw results: "
            "`docs/reliability.json`; this page is generated from them (`scripts/reliability_report.py`).",
            "",
            f"Re-run: `make reliability` (`molecule converge -s default`, then the suite with "
            f"DHIS_FAULT_BATCH={p['batch']} DHIS_FAULT_WORK={p['work']} DHIS_FAULT_WAITING={p['waiting']} "
            f"DHIS_FAULT_OUTAGE={p['outage']}). `make test` runs the same suite in a shorter form; each case "
            "fails there on a lost task, a duplicate where none is allowed, or a Beat period doubled or skipped.",
            "",
            *table,
            "",
            "Each task records its own id once when it completes (`dhis_app.SyncRun`, unique per task id; a "
            "second execution of the same id increments `runs`): *completed* counts distinct ids, *duplicated* "
            "extra executions, *lost* = sent - completed. For Beat (7), *sent* is the periods due between the "
            "first and the last run seen, *completed* the runs (periods inside the restart show as lost).",
            "",
            "What the figures mean (each outcome computed from the row):",
            *meaning,
            "",
            *(render_ha(ha) if ha else []),
        ]
    )


def load_ha() -> dict | None:
    return json.loads(HA_RESULTS.read_text()) if HA_RESULTS.exists() else None


def main() -> None:
    DOC.write_text(render(json.loads(RESULTS.read_text()), load_ha()))


if __name__ == "__main__":
    main()
