"""files/dhis_celery_queues.py's textfile, read by Prometheus's own parser (promtool check metrics).

Counting against a real Redis is proven on the converged hosts (molecule/shared/tests/test_metrics.py).
"""

from __future__ import annotations

import shutil
import subprocess
from types import ModuleType

import pytest
from source import load


def helper() -> ModuleType:
    return load("roles/dhis_celery/files/dhis_celery_queues.py")


def promtool_check(text: str) -> subprocess.CompletedProcess:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: make promtool"
    return subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)


@pytest.mark.parametrize(
    "counts",
    [
        {"queues": {"celery": 0, "sync": 12, "monitor": 3}, "unacked": 2},
        {"queues": {}, "unacked": 0},
        None,  # the broker could not be read
    ],
)
def test_the_textfile_is_valid_exposition_format(counts: dict | None) -> None:
    text = helper().textfile("celery", counts, 1_790_000_000.0)
    result = promtool_check(text)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ('dhis_celery_queue_metrics_up{app="celery"} ' + ("0" if counts is None else "1")) in text


def test_every_queue_gets_its_own_series_and_labels_are_escaped() -> None:
    text = helper().textfile('a"b\\c', {"queues": {"sync": 12, "q.x": 0}, "unacked": 1}, 0)
    assert 'dhis_celery_queue_length{app="a\\"b\\\\c",queue="sync"} 12' in text
    assert 'dhis_celery_queue_length{app="a\\"b\\\\c",queue="q.x"} 0' in text
    assert promtool_check(text).returncode == 0


def test_a_priority_message_is_counted_in_its_own_list() -> None:
    """kombu's lists: QUEUE, then QUEUE + SEP + step for the steps 3, 6 and 9."""
    assert helper().PRIORITY_SUFFIXES == ("", "\x06\x163", "\x06\x166", "\x06\x169")
