"""files/health_gate.py's loop: when it asks the workers and Flower, and when it ends.

systemd, the workers and Flower are replaced by a timeline here; the gate against real units
(a crash-looping worker, a worker that does not answer) is proven on the converged hosts
(molecule/shapes, molecule/shared/tests/test_stack.py).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType, SimpleNamespace

import pytest
from source import load

SETTLE = 5.0


@pytest.fixture
def gate() -> ModuleType:
    return load("roles/dhis_celery/files/health_gate.py")


class Host:
    """A fake clock and the units' start times on it (seconds); `events` change them as time passes."""

    def __init__(self, started: dict[str, float], events: dict[float, Callable[[Host], None]] | None = None) -> None:
        self.now = 100.0
        self.started = dict(started)
        self.restarts = dict.fromkeys(started, 0)
        self.events = dict(events or {})
        self.asked: list[float] = []

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for at in sorted(t for t in self.events if t <= self.now):
            self.events.pop(at)(self)

    def start_again(self, unit: str, by_systemd: bool) -> None:
        self.started[unit] = self.now
        self.restarts[unit] += 1 if by_systemd else 0

    def states(self, units: list[str]) -> dict[str, dict[str, str]]:
        return {
            unit: {
                "ActiveState": "active",
                "SubState": "running",
                "NRestarts": str(self.restarts[unit]),
                "ActiveEnterTimestampMonotonic": str(int(self.started[unit] * 1e6)),
            }
            for unit in units
        }


def crash(unit: str) -> Callable[[Host], None]:
    """An event: systemd restarts the unit (its process exited)."""
    return lambda host: host.start_again(unit, by_systemd=True)


def run(
    gate: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    host: Host,
    answers: Callable[[Host], list[str]],
    restart: tuple[str, ...] = (),
) -> dict:
    """The gate over the host's units but those in `restart`, which it restarts first."""

    def ask(cli: str, app: str, workers: dict) -> list[str]:
        host.asked.append(host.now)
        host.advance(0.8)  # the question starts Django and Celery
        return answers(host)

    clock = SimpleNamespace(
        monotonic=lambda: host.now,
        clock_gettime=lambda _clock: host.now,
        CLOCK_MONOTONIC=1,
        sleep=host.advance,
    )
    monkeypatch.setattr(gate, "time", clock)
    monkeypatch.setattr(gate, "unit_states", host.states)
    monkeypatch.setattr(gate, "worker_problems", ask)
    monkeypatch.setattr(gate, "journal_tail", lambda unit: "")
    monkeypatch.setattr(gate, "restart", lambda units, order: (list(units), []))
    units = [unit for unit in host.started if unit not in restart]
    spec = {"units": units, "restart": list(restart), "workers": {"w": ["q"]}, "cli": "c", "app": "a"}
    spec |= {"settle": SETTLE, "timeout": 30}
    return gate.gate(spec)


def test_workers_are_asked_while_the_units_settle_and_the_gate_ends_when_the_youngest_has_settled(
    gate: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = Host({"worker.service": 99.0, "web.service": 100.0})
    outcome = run(gate, monkeypatch, host, lambda _host: [])
    assert outcome["ok"], outcome
    assert host.asked == [100.0]
    assert outcome["seconds"] == pytest.approx(SETTLE)


def test_a_worker_not_up_yet_is_asked_again_until_it_answers(gate: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    host = Host({"worker.service": 100.0})
    outcome = run(gate, monkeypatch, host, lambda h: [] if h.now >= 102.0 else ["worker w does not answer ping"])
    assert outcome["ok"], outcome
    assert len(host.asked) == 2
    assert outcome["seconds"] == pytest.approx(SETTLE)


def test_an_answer_given_before_a_unit_started_again_is_asked_again(
    gate: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stopped and started by hand during the gate (no NRestarts): the unit's new process is asked again.
    host = Host({"worker.service": 98.0}, {102.0: lambda h: h.start_again("worker.service", by_systemd=False)})
    outcome = run(gate, monkeypatch, host, lambda _host: [])
    assert outcome["ok"], outcome
    assert len(host.asked) == 2
    assert host.asked[1] >= 102.0
    assert outcome["seconds"] >= 2.0 + SETTLE


def test_a_unit_restarted_by_systemd_during_the_gate_fails_it_whatever_the_workers_answered(
    gate: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = Host({"worker.service": 99.0}, {102.0: crash("worker.service")})
    outcome = run(gate, monkeypatch, host, lambda _host: [])
    assert not outcome["ok"]
    assert outcome["problems"] == ["worker.service: restarted 1 time(s) during the check: "]
    assert outcome["seconds"] > 30


def test_a_worker_that_never_answers_fails_the_gate_naming_it(
    gate: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = Host({"worker.service": 50.0})
    outcome = run(gate, monkeypatch, host, lambda _host: ["worker w does not answer ping"])
    assert not outcome["ok"]
    assert outcome["problems"] == ["worker w does not answer ping"]


def test_the_web_unit_it_restarted_is_watched_like_the_celery_units(
    gate: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = Host({"worker.service": 50.0, "web.service": 100.0}, {101.5: crash("web.service")})
    outcome = run(gate, monkeypatch, host, lambda _host: [], restart=("web.service",))
    assert not outcome["ok"]
    assert outcome["restarted"] == ["web.service"]
    assert outcome["problems"] == ["web.service: restarted 1 time(s) during the check: "]
