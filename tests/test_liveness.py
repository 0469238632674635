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
