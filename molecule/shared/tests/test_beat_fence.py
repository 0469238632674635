"""One Beat for sure (dhis_celery_beat_fence): the Beat unit holds a key in the broker's Redis; a
Beat started by hand with the units' settings exits and names the holder; the unit stands by while
another Beat holds the key and takes over once it expires; a holder of this host killed with -9 is
taken over at once by the unit's restart. Tests on one host; every unit is put back."""

from __future__ import annotations

from typing import Any

from dhis_testlib import admin_redis, run, setting, wait_for

BEAT, BROKER = "celery-beat", 6379


def fence(host: Any) -> tuple[str, str]:
    """(key, holder) of the fence in the broker's Redis; ("", "") while nobody holds it."""
    keys = admin_redis(host, BROKER, "--scan", "--pattern", "dhis-celery:beat-fence:*").split()
    assert len(keys) <= 1, keys
    return (keys[0], admin_redis(host, BROKER, "GET", keys[0])) if keys else ("", "")


def main_pid(host: Any) -> str:
    return run(host, f"systemctl show -p MainPID --value {BEAT}").strip()


def held_by_the_unit(host: Any) -> bool:
    return fence(host)[1].startswith(f"{run(host, 'hostname').strip()} pid {main_pid(host)} ")


def journal_since(host: Any, since: str) -> str:
    return run(host, f"journalctl -q -o cat -u {BEAT} --since @{since}")


def test_a_beat_started_by_hand_exits_and_names_the_holder(one_host: Any) -> None:
    host = one_host
    assert wait_for(lambda: held_by_the_unit(host), timeout=30), fence(host)
    assert fence(host)[0] == f"dhis-celery:beat-fence:{setting(host, 'dhis_celery_app_module')}"
    _, holder = fence(host)
    second = host.run("timeout 120 dhis-celery celery beat --loglevel=info")
    assert second.rc == 75, (second.rc, second.stdout[-2000:], second.stderr[-2000:])
    assert "another Beat holds dhis-celery:beat-fence:" in second.stderr
    assert holder in second.stderr
    assert fence(host)[1] == holder and host.service(BEAT).is_running


def test_the_unit_stands_by_while_another_beat_holds_the_fence_and_takes_over(one_host: Any) -> None:
    host = one_host
    key, _ = fence(host)
    run(host, f"systemctl stop {BEAT}")
    try:
        # A clean stop frees the key at once (a restart does not wait for the TTL).
        assert admin_redis(host, BROKER, "EXISTS", key) == "0"
        # Another host's Beat holds it for 20 s more, then stops renewing: long enough for this
        # Beat to load Django and find the key held, even on a loaded machine.
        assert admin_redis(host, BROKER, "SET", key, "elsewhere pid 1 since then (test)", "PX", "20000") == "OK"
        since = run(host, "date +%s").strip()
        run(host, f"systemctl start {BEAT}")
        assert wait_for(lambda: "standing by" in journal_since(host, since), timeout=18), journal_since(host, since)
        assert host.service(BEAT).is_running
        assert fence(host)[1] == "elsewhere pid 1 since then (test)"
        assert wait_for(lambda: held_by_the_unit(host), timeout=40), fence(host)
    finally:
        run(host, f"systemctl start {BEAT}")


def test_a_holder_of_this_host_killed_with_9_is_taken_over_at_once(one_host: Any) -> None:
    host = one_host
    assert wait_for(lambda: held_by_the_unit(host), timeout=30), fence(host)
    killed = main_pid(host)
    since = run(host, "date +%s").strip()
    key, _ = fence(host)
    run(host, f"kill -9 {killed}")
    # The key outlives the restart by far (a minute), so only the take-over can free it in time.
    assert admin_redis(host, BROKER, "PEXPIRE", key, "60000") == "1"
    # systemd restarts the unit (Restart=on-failure); the new Beat sees the key of a process gone.
    assert wait_for(lambda: main_pid(host) not in {killed, "0"} and held_by_the_unit(host), timeout=40), fence(host)
    assert f"pid {killed} " in journal_since(host, since)
    assert "which no longer runs: taking it over" in journal_since(host, since)
