"""files/dhis_celery_liveness.py's count of rounds in which a worker holds tasks and runs none.

Rounds against real workers, a wedged one among them, are proven on the converged hosts
(molecule/shapes/tests/test_liveness_stuck.py, molecule/shared/tests/test_liveness.py).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from source import load


@pytest.fixture(scope="module")
def liveness() -> ModuleType:
    return load("roles/dhis_celery/files/dhis_celery_liveness.py")


def rounds(liveness: ModuleType, state: Path, *answers: tuple[list[str], int]) -> list[int]:
    return [liveness.stuck({"reserved": held, "active": active}, state) for held, active in answers]


def test_the_same_tasks_held_and_none_running_count_round_after_round(liveness: ModuleType, tmp_path: Path) -> None:
    assert rounds(liveness, tmp_path / "w.stuck", (["a", "b"], 0), (["a", "b"], 0), (["a", "b"], 0)) == [1, 2, 3]


def test_new_tasks_on_top_of_those_held_still_count(liveness: ModuleType, tmp_path: Path) -> None:
    assert rounds(liveness, tmp_path / "w.stuck", (["a"], 0), (["a", "b"], 0)) == [1, 2]


def test_a_held_task_that_left_starts_the_count_again(liveness: ModuleType, tmp_path: Path) -> None:
    assert rounds(liveness, tmp_path / "w.stuck", (["a", "b"], 0), (["b", "c"], 0)) == [1, 1]


@pytest.mark.parametrize(
    "answer",
    [([], 0), (["a"], 1), (["a"], -1)],
    ids=["holds-nothing", "runs-a-task", "active-not-answered"],
)
def test_a_worker_that_runs_or_holds_nothing_is_not_counted_and_its_count_is_dropped(
    liveness: ModuleType, tmp_path: Path, answer: tuple[list[str], int]
) -> None:
    state = tmp_path / "w.stuck"
    assert rounds(liveness, state, (["a"], 0), answer, (["a"], 0)) == [1, 0, 1]
    assert state.exists()


def rounds_of_main(
    liveness: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, replies: list[dict]
) -> tuple[list[str], list[list[str]]]:
    """Runs main() once per reply (the real questions and systemctl replaced): what it printed
    and the commands it ran."""
    config = tmp_path / "liveness.json"
    config.write_text(
        '{"cli": "cli", "app": "a", "instances": {"w": "w.service"}, "timeout": 3, "failures": 2,'
        f' "state_dir": "{tmp_path}"}}'
    )
    ran: list[list[str]] = []
    monkeypatch.setattr(liveness.socket, "gethostname", lambda: "h")
    monkeypatch.setattr(liveness, "running_for", lambda unit: 600.0)
    monkeypatch.setattr(liveness.subprocess, "run", lambda argv, **kwargs: ran.append(argv))
    printed = []
    for reply in replies:
        monkeypatch.setattr(liveness, "answers", lambda *args, reply=reply: reply)
        monkeypatch.setattr("builtins.print", printed.append)
        liveness.main(str(config))
    return printed, ran


def test_two_silent_rounds_restart_the_instance(
    liveness: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    printed, ran = rounds_of_main(liveness, tmp_path, monkeypatch, [{}, {}])
    assert printed == [
        "liveness: w.service did not answer a ping within 3 s (1 of 2)",
        "liveness: w.service did not answer 2 pings in a row: restarting it (warm shutdown)",
    ]
    assert ran == [["systemctl", "restart", "--no-block", "w.service"]]


def test_two_rounds_holding_the_same_tasks_restart_the_instance_and_a_silent_one_between_resets(
    liveness: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = {"w@h": {"reserved": ["a", "b"], "active": 0}}
    printed, ran = rounds_of_main(liveness, tmp_path, monkeypatch, [held, {}, held, held])
    assert printed == [
        "liveness: w.service holds 2 reserved task(s) and runs none (1 of 2)",
        "liveness: w.service did not answer a ping within 3 s (1 of 2)",
        "liveness: w.service holds 2 reserved task(s) and runs none (1 of 2)",
        "liveness: w.service has held 2 reserved task(s) and run none of them for 2 rounds in a row:"
        " restarting it (warm shutdown)",
    ]
    assert ran == [["systemctl", "restart", "--no-block", "w.service"]]
    assert not list(tmp_path.glob("w.*"))
