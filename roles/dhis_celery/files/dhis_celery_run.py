"""Run celery, manage.py or python for a project with the environment of its Celery units.

Installed by the dhis_celery role and run by the system Python in isolated mode (`python3 -I`):
    dhis_celery_run.py CONFIG celery|manage|python ARGS...
CONFIG (a JSON file the role writes, or the JSON itself for the role's checks) names the user,
group, project and virtualenv directories, the environment files, further variables and the
`celery -A` target. The environment files are parsed here with systemd's EnvironmentFile rules,
as data: nothing in them is evaluated by a shell. When started as root, the process drops to
the application user before the virtualenv's code runs, so root never runs code that user can
change.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import sys

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SHELL_ESCAPES = '"\\`$'


def parse_env(text: str) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile= reads them (comments, quotes, escapes)."""
    result: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i < n and text[i] in "#;":
            while i < n and text[i] != "\n":
                i += 1
            continue
        start = i
        while i < n and text[i] not in "=\n":
            i += 1
        if i >= n or text[i] != "=":
            continue  # a line without '=' is ignored, as systemd does
        key = text[start:i].strip()
        i += 1
        while i < n and text[i] in " \t":
            i += 1
        value: list[str] = []
        kept = 0  # characters up to the end of the last quoted part: never stripped
        while i < n and text[i] != "\n":
            char = text[i]
            if char == "'":
                end = text.find("'", i + 1)
                end = n if end < 0 else end
                value.append(text[i + 1 : end])
                i, kept = end + 1, len(value)
            elif char == '"':
                i += 1
                while i < n and text[i] != '"':
                    if text[i] == "\\" and i + 1 < n:
                        nxt = text[i + 1]
                        if nxt in SHELL_ESCAPES:
                            value.append(nxt)
                        elif nxt != "\n":  # a backslash-newline continues the line
                            value.append("\\" + nxt)
                        i += 2
                        continue
                    value.append(text[i])
                    i += 1
                i, kept = i + 1, len(value)
            elif char == "\\" and i + 1 < n:
                if text[i + 1] != "\n":
                    value.append(text[i + 1])
                i += 2
            else:
                value.append(char)
                i += 1
        result[key] = "".join(value[:kept]) + "".join(value[kept:]).rstrip(" \t")
    return result


def environment(config: dict, base: dict[str, str]) -> dict[str, str]:
    env = {"PATH": BASE_PATH, **{k: base[k] for k in ("LANG", "LC_ALL", "TERM") if k in base}}
    for path in config["environment_files"]:
        with open(path, encoding="utf-8") as handle:
            env.update(parse_env(handle.read()))
    env.update({str(k): str(v) for k, v in config.get("environment", {}).items()})
    return env


def drop_privileges(user: str, group: str, env: dict[str, str]) -> None:
    entry = pwd.getpwnam(user)
    env.update(HOME=entry.pw_dir, USER=user, LOGNAME=user)
    if os.geteuid() == entry.pw_uid:
        return
    if os.geteuid() != 0:
        sys.exit(f"run this as root or as {user}")
    gid = grp.getgrnam(group).gr_gid
    os.setgroups([])
    os.initgroups(user, gid)
    os.setgid(gid)
    os.setuid(entry.pw_uid)
    if os.getuid() == 0 or os.geteuid() == 0:
        sys.exit("could not drop root privileges")


def command(config: dict, args: list[str]) -> list[str]:
    venv = config["venv_dir"]
    if args[:1] == ["celery"]:
        return [f"{venv}/bin/celery", "-A", config["celery_app"], *args[1:]]
    if args[:1] == ["manage"]:
        return [f"{venv}/bin/python", "manage.py", *args[1:]]
    if args[:1] == ["python"]:
        return [f"{venv}/bin/python", *args[1:]]
    sys.exit(f"usage: {config.get('name', 'dhis-celery')} celery|manage|python ARGS...")


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit("usage: dhis_celery_run.py CONFIG celery|manage|python ARGS...")
    if argv[1].startswith("{"):
        config = json.loads(argv[1])
    else:
        with open(argv[1], encoding="utf-8") as handle:
            config = json.load(handle)
    argv_out = command(config, argv[2:])
    env = environment(config, dict(os.environ))
    drop_privileges(config["user"], config["group"], env)
    os.chdir(config["app_dir"])
    os.execve(argv_out[0], argv_out, env)


if __name__ == "__main__":
    main(sys.argv)
