"""plugins/modules/dhis_celery_converged.py: the record of the last full run and what counts as
the host having moved since, on real files in a temporary directory."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins/modules"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins/filter"))

import dhis_celery_converged as converged
from dhis_celery_plan import fingerprint

STATUS = """Package: redis-server
Status: install ok installed
Architecture: amd64
Version: 5:7.0.15-1

Package: other
Status: install ok installed
Version: 1
"""


@pytest.fixture
def host(tmp_path: Path) -> dict:
    """A project, a virtualenv, a configuration directory and dpkg's database; units in a dict."""
    (tmp_path / "etc/celery/python/__pycache__").mkdir(parents=True)
    (tmp_path / "etc/celery/python/settings.py").write_text("A = 1\n")
    (tmp_path / "etc/systemd").mkdir(parents=True)
    (tmp_path / "etc/systemd/app-worker@.service").write_text("[Service]\n")
    (tmp_path / "srv/app/venv/lib/python3.11/site-packages/celery-5.4.0.dist-info").mkdir(parents=True)
    (tmp_path / "srv/app/venv/pyvenv.cfg").write_text("home = /usr/bin\n")
    (tmp_path / "srv/app/data").mkdir()
    (tmp_path / "srv/app/app").mkdir()
    (tmp_path / "srv/app/app/views.py").write_text("x = 1\n")
    (tmp_path / "status").write_text(STATUS)
    units = {"app-worker@default.service": ("active", "enabled")}

    def show(names: list[str]) -> str:
        return "\n\n".join(
            f"Id={n}\nActiveState={units.get(n, ('inactive', ''))[0]}\nUnitFileState={units.get(n, ('', ''))[1]}"
            for n in names
        )

    recipe = {
        "roots": [str(tmp_path / "etc/celery"), str(tmp_path / "etc/systemd/app-*")],
        "units": ["app-worker@default.service", "app-beat.service"],
        "packages": ["redis-server", "redis-tools"],
        "venv": str(tmp_path / "srv/app/venv"),
        "app": [str(tmp_path / "srv/app")],
        "app_exclude": [str(tmp_path / "srv/app/venv"), str(tmp_path / "srv/app/data")],
    }
    return {"root": tmp_path, "units": units, "show": show, "recipe": recipe, "record": str(tmp_path / "rec/r.json")}


def check(host: dict, fingerprint: str = "f1") -> list[str]:
    return converged.check(host["record"], fingerprint, host["show"], str(host["root"] / "status"))


def record(host: dict) -> None:
    converged.record(host["record"], "f1", host["recipe"], host["show"], str(host["root"] / "status"))


def test_no_record_means_a_full_run(host: dict) -> None:
    assert check(host) == ["no record of a full run that passed its health gate"]


def test_a_host_as_recorded_is_fresh_and_bytecode_or_data_do_not_count(host: dict) -> None:
    record(host)
    (host["root"] / "etc/celery/python/__pycache__/settings.cpython-311.pyc").write_bytes(b"x")
    (host["root"] / "srv/app/data/upload.py").write_text("a user's file\n")
    assert check(host) == []
    assert check(host, "f2")[0].startswith("the inputs")


@pytest.mark.parametrize(
    "move, part",
    [
        (lambda r, u: (r / "etc/celery/python/settings.py").write_text("A = 2\n"), "files"),
        (lambda r, u: os.chmod(r / "etc/celery/python/settings.py", 0o666), "files"),
        (lambda r, u: (r / "etc/celery/python/settings.py").unlink(), "files"),
        (lambda r, u: (r / "etc/systemd/app-worker@x.service").write_text(""), "files"),
        # A FIFO where a file was: counted as moved, never opened (it would block).
        (lambda r, u: ((r / "srv/app/venv/pyvenv.cfg").unlink(), os.mkfifo(r / "srv/app/venv/pyvenv.cfg")), "venv"),
        (lambda r, u: u.update({"app-worker@default.service": ("failed", "enabled")}), "units"),
        (lambda r, u: u.update({"app-worker@default.service": ("active", "disabled")}), "units"),
        (lambda r, u: (r / "status").write_text(STATUS.replace("7.0.15-1", "7.0.15-2")), "packages"),
        (
            lambda r, u: (r / "srv/app/venv/lib/python3.11/site-packages/celery-5.4.0.dist-info").rename(
                r / "srv/app/venv/lib/python3.11/site-packages/celery-5.5.0.dist-info"
            ),
            "venv",
        ),
        (lambda r, u: (r / "srv/app/app/views.py").write_text("x = 22\n"), "app"),
        (lambda r, u: (r / "srv/app/app/new.py").write_text(""), "app"),
    ],
)
def test_what_moved_is_named(host: dict, move, part: str) -> None:
    record(host)
    move(host["root"], host["units"])
    reasons = check(host)
    assert len(reasons) == 1 and reasons[0].startswith(part), reasons


def test_a_data_directory_that_is_the_project_itself_still_counts(host: dict) -> None:
    host["recipe"]["app_exclude"] = [str(host["root"] / "srv/app")]
    record(host)
    (host["root"] / "srv/app/app/views.py").write_text("x = 3\n")
    assert check(host)[0].startswith("app")


def test_record_writes_root_only_and_atomically(host: dict) -> None:
    record(host)
    assert Path(host["record"]).stat().st_mode & 0o777 == 0o600
    assert [p.name for p in Path(host["record"]).parent.iterdir()] == ["r.json"]
    assert json.loads(Path(host["record"]).read_text())["fingerprint"] == "f1"


def test_fingerprint_covers_values_and_files(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks/main.yml").write_text("a\n")
    first = fingerprint({"dhis_celery_redis_password": "p;$'\"é"}, str(tmp_path))
    assert first == fingerprint({"dhis_celery_redis_password": "p;$'\"é"}, str(tmp_path))
    assert first != fingerprint({"dhis_celery_redis_password": "p;$'\"e"}, str(tmp_path))
    (tmp_path / "tasks/main.yml").write_text("b\n")
    assert first != fingerprint({"dhis_celery_redis_password": "p;$'\"é"}, str(tmp_path))
