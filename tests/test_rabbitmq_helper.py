"""files/dhis_celery_rabbitmq.py's calls of rabbitmqctl: what reaches the CLI's stdin and argv.

The CLI here is a stand-in that records what it was given; RabbitMQ itself reading that password
is proven on the ha scenario's nodes (molecule/ha/tests/test_ha.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from source import load

PASSWORD = "rabbit;pa$$'\"é/@:%20x 😀"
RECORDER = """#!/usr/bin/python3
import json, os, sys
data = sys.stdin.buffer.read()
with open({out!r}, "w") as f:
    json.dump({{"argv": sys.argv[1:], "stdin": data.hex(), "lc_all": os.environ.get("LC_ALL")}}, f)
"""


def helper(tmp_path: Path) -> tuple[ModuleType, Path]:
    module = load("roles/dhis_celery/files/dhis_celery_rabbitmq.py")
    out = tmp_path / "seen.json"
    ctl = tmp_path / "rabbitmqctl"
    ctl.write_text(RECORDER.format(out=str(out)))
    ctl.chmod(0o755)
    module.CTL = str(ctl)
    return module, out


@pytest.mark.parametrize("locale", ["C", "POSIX", "en_US.ISO-8859-1"])
def test_a_password_reaches_the_cli_as_utf8_with_the_user_as_its_only_argument(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, locale: str
) -> None:
    monkeypatch.setenv("LC_ALL", locale)
    monkeypatch.setenv("LANG", locale)
    module, out = helper(tmp_path)
    module.ctl("change_password", "app", stdin=PASSWORD)
    seen = json.loads(out.read_text())
    # RabbitMQ 4.0's wrapper reads stdin only when the command and the user are all of argv.
    assert seen["argv"] == ["change_password", "app"]
    assert bytes.fromhex(seen["stdin"]) == PASSWORD.encode("utf-8")
    assert seen["lc_all"] == "C.UTF-8"


def test_a_command_without_a_password_is_quiet(tmp_path: Path) -> None:
    module, out = helper(tmp_path)
    module.ctl("list_users")
    assert json.loads(out.read_text())["argv"] == ["-q", "list_users"]
