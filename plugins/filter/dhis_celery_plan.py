"""The dhis_celery plan: every role input normalised and validated in one place.

`dhis_celery_plan(inputs, parts, facts)` takes the role's public variables (a dict of every
`dhis_celery_*` name), the parts this host runs (from the inventory groups) and a few facts,
and returns this host's plan: the workers with every default filled in, their unit and env
file names, the queues, the units, the paths, and `problems`, a list of messages that each
name the variable and the fix. The role's tasks, templates and handlers read the plan instead
of deriving the same values again; preflight fails on any problem before a host changes.

Pure Python, no Ansible import needed at run time: tests/test_plan.py checks it on the controller.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import posixpath
import re
import unicodedata
from typing import Any

WORKER_DEFAULTS: dict[str, Any] = {
    "pool": "prefork",
    "loglevel": "info",
    "extra_args": [],
    "max_tasks_per_child": 0,
    "max_memory_per_child": 0,
    "memory_high": "",
    "memory_max": "",
}
# systemd's MemoryHigh=/MemoryMax= values: bytes with an optional K/M/G/T suffix, a percentage of
# the host's memory, or infinity ("" leaves the unit without a limit).
MEMORY = re.compile(r"(\d+[KMGT]?|\d{1,2}(\.\d+)?%|100%|infinity)?\Z")
# Below this no worker with Django loaded starts: an idle instance holds more (its cgroup's
# MemoryCurrent, checked by molecule/shared/tests/test_memory.py).
MIN_WORKER_MEMORY = 96 * 2**20


def _size(value: str) -> int:
    """Bytes of a systemd size (512M, 2G); 0 for what is not absolute (20%, infinity, '')."""
    match = re.fullmatch(r"(\d+)([KMGT]?)", value)
    return int(match.group(1)) * 1024 ** "_KMGT".index(match.group(2) or "_") if match else 0


# PEM texts span lines; they are only ever written whole into files of their own.
PEM_VARIABLES = {
    "dhis_celery_tls_ca_cert",
    "dhis_celery_tls_ca_key",
    "dhis_celery_redis_tls_cert",
    "dhis_celery_redis_tls_key",
}
PEM_CERT = "-----BEGIN CERTIFICATE-----"

POOLS = ("prefork", "threads", "solo", "gevent", "eventlet")
# Pools whose worker consumes through kombu's synchronous loop, not its event loop.
GREEN_POOLS = ("gevent", "eventlet")
# kombu's Redis transport opens at most this many connections per worker by default.
KOMBU_REDIS_MAX_CONNECTIONS = 10
LOGLEVELS = ("debug", "info", "warning", "error", "critical")

# Whole-string patterns: \Z, never $, which also matches before a trailing newline.
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = rf"{_NAME}(\.{_NAME})*"
IDENT = re.compile(rf"{_NAME}\Z")
MODULE = re.compile(rf"{_DOTTED}\Z")
SCHEDULER = re.compile(rf"{_DOTTED}(:{_NAME})?\Z")
WORKER_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
QUEUE = re.compile(r"[A-Za-z0-9_.:-]{1,200}\Z")
POSIX_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}\Z")
UNIT_PREFIX = re.compile(r"[a-z][a-z0-9-]{0,40}\Z")
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
ACL_USER = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
FLOWER_USER = re.compile(r"[A-Za-z0-9_.@-]{1,64}\Z")
# Characters a path may hold where it lands in a unit (no blank, quote, backslash, % or $).
PATH_CHARS = re.compile(r"/[A-Za-z0-9_./@+-]*\Z")
EXTRA_ARG = re.compile(r"--?[A-Za-z0-9][A-Za-z0-9-]*(=[A-Za-z0-9_.,:/@+-]*)?\Z")
SERVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]*\.service\Z")

# Directories a path the role writes, chowns, makes writable or deletes must never be.
SYSTEM_DIRS = frozenset(
    "/ /bin /boot /dev /etc /home /lib /lib32 /lib64 /libx32 /media /mnt /opt /proc /root /run /sbin /srv "
    "/sys /tmp /usr /usr/bin /usr/lib /usr/lib64 /usr/libexec /usr/local /usr/local/bin /usr/local/lib "
    "/usr/local/sbin /usr/sbin /usr/share /usr/src /var /var/cache /var/lib /var/log /var/spool /var/tmp "
    "/etc/systemd /etc/systemd/system /lib/systemd /usr/lib/systemd /etc/redis /var/lib/redis /etc/ssl "
    "/etc/default /etc/init.d /etc/sudoers.d /etc/pam.d /etc/ssh /etc/cron.d".split()
)
# Trees a service must never be allowed to write (ReadWritePaths would undo ProtectSystem).
READ_ONLY_TREES = ("/usr", "/etc", "/boot", "/bin", "/sbin", "/lib", "/proc", "/sys", "/dev", "/root")
# Unit names and commands of the system the prefix and the CLI name must not take over.
RESERVED_UNIT_PREFIXES = frozenset(
    "default multi-user graphical basic sysinit network network-online local-fs remote-fs rescue emergency "
    "shutdown reboot poweroff halt kexec timers sockets paths slices swap getty ssh sshd cron dbus redis "
    "redis-server systemd user init rc-local exit final sleep suspend hibernate".split()
)
RESERVED_COMMANDS = frozenset(
    "bash sh dash su sudo env python python3 pip pip3 celery redis-cli redis-server systemctl journalctl "
    "ansible ansible-playbook ls cp mv rm ln cat chmod chown find apt apt-get dpkg runuser login passwd".split()
)
# Environment keys that change how programs load or where they look.
LOADER_KEYS = re.compile(r"(PATH|LD_.*|BASH_ENV|ENV|IFS|SHELLOPTS|BASHOPTS|PS4|PYTHON.*|PERL5.*|NODE_OPTIONS)\Z")
ROLE_KEYS = frozenset(
    "DJANGO_SETTINGS_MODULE CELERY_QUEUES CELERY_POOL CELERY_CONCURRENCY CELERY_LOGLEVEL CELERY_EXTRA_ARGS".split()
)
# Redis ACL: what the application user must never get.
ACL_FORBIDDEN_TOKENS = frozenset({"nopass", "allcommands", "+@all", "+@admin", "+@dangerous", "resetpass", "allkeys"})
ACL_ADMIN_COMMANDS = frozenset(
    "acl bgrewriteaof bgsave config debug failover flushall flushdb keys migrate module monitor "
    "psync replconf replicaof save shutdown slaveof sync cluster latency lastsave".split()
)
SERIALIZER_SETTINGS = (
    "accept_content",
    "result_accept_content",
    "task_serializer",
    "result_serializer",
    "event_serializer",
)
LOOPBACK_NAMES = ("localhost",)


class Problems(list):
    def add(self, variable: str, message: str) -> None:
        self.append(f"{variable}: {message}")


def _control_chars(value: Any, path: str, problems: Problems) -> None:
    """Refuse control characters anywhere in a string that can land in a file or a unit."""
    if isinstance(value, str):
        if any(unicodedata.category(c) == "Cc" for c in value):
            problems.add(path, "contains a control character (newline, tab, NUL...); remove it.")
    elif isinstance(value, dict):
        for key, item in value.items():
            _control_chars(str(key), f"{path} (a key)", problems)
            _control_chars(item, f"{path}.{key}", problems)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _control_chars(item, f"{path}[{index}]", problems)


def _path(value: Any, variable: str, problems: Problems, *, owned: bool = False) -> str:
    """An absolute, normalised path of safe characters; `owned`: the role creates, chowns or removes it."""
    if not isinstance(value, str) or not value.startswith("/"):
        problems.add(variable, f"must be an absolute path; got {value!r}.")
        return str(value)
    if posixpath.normpath(value) != value or value.startswith("//"):
        problems.add(variable, f"must be a normalised path (no '..', '.', '//' or trailing '/'); got {value!r}.")
    elif not PATH_CHARS.match(value):
        problems.add(
            variable, f"may hold only letters, digits and / _ . @ + - (it lands in systemd units); got {value!r}."
        )
    if owned and value in SYSTEM_DIRS:
        problems.add(variable, f"{value!r} is a system directory; give the role a directory of its own.")
    return value


def _int(value: Any, variable: str, problems: Problems, low: int, high: int | None = None) -> int:
    try:
        number = int(value)
        if isinstance(value, bool) or str(number) != str(value).strip():
            raise ValueError
    except (TypeError, ValueError):
        problems.add(variable, f"must be a whole number; got {value!r}.")
        return low
    if number < low or (high is not None and number > high):
        bounds = f"{low}-{high}" if high is not None else f"{low} or more"
        problems.add(variable, f"must be within {bounds}; got {number}.")
    return number


def _workers(v: dict, parts: dict, vcpus: int, problems: Problems) -> list[dict]:
    raw = v.get("dhis_celery_workers")
    if not isinstance(raw, list):
        problems.add("dhis_celery_workers", f"must be a list of worker entries; got {type(raw).__name__}.")
        return []
    if not raw and parts.get("workers") and v.get("dhis_celery_state", "present") == "present":
        problems.add(
            "dhis_celery_workers", "is empty: declare at least one worker, e.g. [{name: default, queues: [celery]}]."
        )
    prefix, conf_dir = v.get("dhis_celery_unit_prefix", "celery"), v.get("dhis_celery_conf_dir", "")
    prefetch = _int(
        v.get("dhis_celery_worker_prefetch_multiplier", 1), "dhis_celery_worker_prefetch_multiplier", problems, 1, 64
    )
    workers, names = [], set()
    for index, entry in enumerate(raw):
        where = f"dhis_celery_workers[{index}]"
        if not isinstance(entry, dict):
            problems.add(where, "must be a mapping with at least name and queues.")
            continue
        unknown = set(entry) - {"name", "queues", "concurrency", "prefetch_multiplier", *WORKER_DEFAULTS}
        if unknown:
            problems.add(where, f"has unknown keys {sorted(unknown)}.")
        worker = {**WORKER_DEFAULTS, "concurrency": max(vcpus, 1), **entry}
        name = str(worker.get("name", ""))
        if not WORKER_NAME.match(name):
            problems.add(
                f"{where}.name", f"must be letters, digits, '-' or '_' (it names a systemd unit); got {name!r}."
            )
        elif name in names:
            problems.add(f"{where}.name", f"{name!r} is declared twice in dhis_celery_workers; names must be unique.")
        names.add(name)
        queues = worker.get("queues")
        if not isinstance(queues, list) or not queues:
            problems.add(f"{where}.queues", "must list at least one queue.")
            queues = []
        for queue in queues:
            if not isinstance(queue, str) or not QUEUE.match(queue):
                problems.add(f"{where}.queues", f"queue names are letters, digits and _ . : -; got {queue!r}.")
        worker["concurrency"] = _int(worker["concurrency"], f"{where}.concurrency", problems, 1, 1024)
        if worker["pool"] not in POOLS:
            problems.add(f"{where}.pool", f"must be one of {', '.join(POOLS)}; got {worker['pool']!r}.")
        # A green pool's synchronous loop on the Redis transport stops asking for messages once
        # every slot holds one, and asks again only when its poll times out (up to a second): each
        # batch of `concurrency` tasks then waits for it. Two batches reserved keep the next at
        # hand (docs/PERFORMANCE.md has the throughput of both); broker_max_connections below
        # lets its greenlets acknowledge them at once.
        green_on_redis = worker["pool"] in GREEN_POOLS and v.get("dhis_celery_broker", "redis") == "redis"
        worker["prefetch_multiplier"] = _int(
            worker.get("prefetch_multiplier", max(prefetch, 2) if green_on_redis else prefetch),
            f"{where}.prefetch_multiplier",
            problems,
            1,
            64,
        )
        if worker["loglevel"] not in LOGLEVELS:
            problems.add(f"{where}.loglevel", f"must be one of {', '.join(LOGLEVELS)}; got {worker['loglevel']!r}.")
        extra = worker["extra_args"] if isinstance(worker["extra_args"], list) else [worker["extra_args"]]
        for arg in extra:
            if not isinstance(arg, str) or not EXTRA_ARG.match(arg):
                problems.add(
                    f"{where}.extra_args", f"each item is one option like --max-tasks-per-child=100; got {arg!r}."
                )
        # Child recycling (Celery) inside, a systemd memory fence outside.
        child_args = []
        for key, option in (
            ("max_tasks_per_child", "--max-tasks-per-child"),
            ("max_memory_per_child", "--max-memory-per-child"),
        ):
            worker[key] = _int(worker[key], f"{where}.{key}", problems, 0, 2**31 - 1)
            if worker[key]:
                child_args.append(f"{option}={worker[key]}")
        for key in ("memory_high", "memory_max"):
            if not isinstance(worker[key], str) or not MEMORY.match(worker[key]):
                problems.add(
                    f"{where}.{key}", f"must be like 512M, 2G, 20% or infinity (systemd); got {worker[key]!r}."
                )
            elif 0 < _size(worker[key]) < MIN_WORKER_MEMORY:
                problems.add(
                    f"{where}.{key}",
                    f"({worker[key]}) is below what one worker needs to start (its main process and one pool child"
                    f" with Django loaded): at least {MIN_WORKER_MEMORY // 2**20}M.",
                )
        unit = f"{prefix}-worker@{name}.service"
        worker.update(
            name=name,
            queues=list(queues),
            extra_args=list(extra),
            child_args=child_args,
            unit=unit,
            env_file=f"{conf_dir}/worker-{name}.env",
            memory_dropin=f"/etc/systemd/system/{unit}.d/memory.conf",
            memory_fenced=bool(worker["memory_high"] or worker["memory_max"]),
        )
        workers.append(worker)
    return workers


def _acl(v: dict, problems: Problems) -> None:
    names = {
        variable: v.get(variable, "")
        for variable in ("dhis_celery_redis_user", "dhis_celery_redis_admin_user", "dhis_celery_redis_metrics_user")
    }
    for variable, name in names.items():
        if not isinstance(name, str) or not ACL_USER.match(name):
            problems.add(variable, f"must be letters, digits and _ . -; got {name!r}.")
        elif name == "default":
            problems.add(variable, "must not be 'default' (the role turns Redis's default user off).")
    seen: dict[str, str] = {}
    for variable, name in names.items():
        if name in seen:
            problems.add(seen[name], f"must differ from {variable} (both {name!r}).")
            problems.add(variable, f"must differ from {seen[name]} (both {name!r}).")
        seen.setdefault(name, variable)
    granted = {"@admin": False, "@dangerous": False}
    for token in str(v.get("dhis_celery_redis_user_acl", "")).split():
        lowered = token.lower()
        if lowered in ("+@all", "allcommands"):
            granted = dict.fromkeys(granted, True)
        elif lowered in ("-@all", "nocommands", "reset"):
            granted = dict.fromkeys(granted, False)
        elif lowered[1:] in granted and lowered[0] in "+-":
            granted[lowered[1:]] = lowered[0] == "+"
        if lowered in ("nopass", "resetpass") or lowered[:1] in (">", "<", "#", "!"):
            problems.add("dhis_celery_redis_user_acl", f"must not set passwords ({token!r}): the role sets them.")
        elif lowered in ("on", "off", "reset", "resetkeys", "resetchannels"):
            problems.add("dhis_celery_redis_user_acl", f"must not use {token!r}: the role manages the user's state.")
        elif lowered[:1] == "+" and lowered[1:].split("|")[0] in ACL_ADMIN_COMMANDS:
            problems.add("dhis_celery_redis_user_acl", f"must not grant the admin or dangerous command {token!r}.")
    for category, on in granted.items():
        if on:
            problems.add(
                "dhis_celery_redis_user_acl",
                f"grants {category}; the application user must end with -@admin -@dangerous after any +@all.",
            )


def _environment(v: dict, problems: Problems) -> None:
    env = v.get("dhis_celery_environment") or {}
    if not isinstance(env, dict):
        problems.add("dhis_celery_environment", "must be a mapping of NAME: value.")
        return
    for key, value in env.items():
        key = str(key)
        if not IDENT.match(key):
            problems.add("dhis_celery_environment", f"key {key!r} is not a variable name (letters, digits, _).")
        elif LOADER_KEYS.match(key) or key in ROLE_KEYS:
            problems.add(
                "dhis_celery_environment",
                f"key {key!r} changes how programs load or is set by the role; set it elsewhere or drop it.",
            )
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            problems.add("dhis_celery_environment", f"value of {key!r} must be a string or a number.")


def _serializers(v: dict, problems: Problems) -> None:
    if v.get("dhis_celery_allow_unsafe_serializers"):
        return
    settings = dict(v.get("dhis_celery_settings") or {})
    for key, value in (v.get("dhis_celery_django_settings") or {}).items():
        if str(key).startswith("CELERY_"):
            settings[str(key)[7:].lower()] = value
    for key in SERIALIZER_SETTINGS:
        if key not in settings:
            continue
        values = settings[key] if isinstance(settings[key], list) else [settings[key]]
        if any(str(item).lower() not in ("json", "application/json") for item in values):
            problems.add(
                "dhis_celery_settings",
                f"{key}={settings[key]!r}: only JSON is accepted (pickle or yaml let anyone who can write to the "
                "broker run code in the workers); set dhis_celery_allow_unsafe_serializers: true to opt in.",
            )


def _listen(v: dict, facts: dict, problems: Problems) -> None:
    if v.get("dhis_celery_allow_public_listen"):
        return
    private = set(facts.get("addresses") or [])

    def allowed(address: str) -> bool:
        if address in LOOPBACK_NAMES or address in private:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return ip.is_loopback or (ip.is_private and not ip.is_unspecified and address in private)

    flower = str(v.get("dhis_celery_flower_address", ""))
    if not allowed(flower):
        problems.add(
            "dhis_celery_flower_address",
            f"{flower!r} is beyond loopback and this host's private addresses; Flower serves /metrics without "
            "auth there. Keep 127.0.0.1 behind a proxy, or set dhis_celery_allow_public_listen: true.",
        )
    bind = v.get("dhis_celery_redis_bind") or []
    for address in bind if isinstance(bind, list) else [bind]:
        bare = str(address).removeprefix("-")
        try:
            ipaddress.ip_address(bare)
        except ValueError:
            problems.add(
                "dhis_celery_redis_bind", f"entries are IP addresses (optionally '-'-prefixed); got {address!r}."
            )
            continue
        if not allowed(bare):
            problems.add(
                "dhis_celery_redis_bind",
                f"{address!r} is beyond loopback and this host's private addresses; "
                "set dhis_celery_allow_public_listen: true to expose Redis there.",
            )


def _names(v: dict, problems: Problems) -> None:
    for variable in ("dhis_celery_user", "dhis_celery_group"):
        name = v.get(variable)
        if not isinstance(name, str) or not POSIX_NAME.match(name):
            problems.add(
                variable, f"must be a system user or group name (lowercase letters, digits, _ -); got {name!r}."
            )
        elif name == "root":
            problems.add(variable, "must not be root: the Celery services run as an unprivileged user.")
    prefix = v.get("dhis_celery_unit_prefix")
    if not isinstance(prefix, str) or not UNIT_PREFIX.match(prefix):
        problems.add("dhis_celery_unit_prefix", f"must be lowercase letters, digits and '-'; got {prefix!r}.")
    elif prefix in RESERVED_UNIT_PREFIXES or prefix.startswith("systemd"):
        problems.add(
            "dhis_celery_unit_prefix", f"{prefix!r} would replace a system unit ({prefix}.target); pick another."
        )
    cli = v.get("dhis_celery_cli_name")
    if not isinstance(cli, str) or not FILE_NAME.match(cli):
        problems.add("dhis_celery_cli_name", f"must be a plain file name (installed in /usr/local/bin); got {cli!r}.")
    elif cli in RESERVED_COMMANDS:
        problems.add("dhis_celery_cli_name", f"{cli!r} would shadow a system command; pick another name.")
    module = v.get("dhis_celery_settings_module_name")
    if not isinstance(module, str) or not IDENT.match(module):
        problems.add("dhis_celery_settings_module_name", f"must be a Python module name; got {module!r}.")
    app = v.get("dhis_celery_app_module")
    if not isinstance(app, str) or (app and not MODULE.match(app)):
        problems.add(
            "dhis_celery_app_module", f"must be a dotted Python module name, or '' for the role's app; got {app!r}."
        )
    settings = v.get("dhis_celery_django_settings_module")
    if not isinstance(settings, str) or not MODULE.match(settings):
        problems.add("dhis_celery_django_settings_module", f"must be a dotted Python module name; got {settings!r}.")
    scheduler = v.get("dhis_celery_beat_scheduler")
    if not isinstance(scheduler, str) or not SCHEDULER.match(scheduler):
        problems.add("dhis_celery_beat_scheduler", f"must be module.path:Class; got {scheduler!r}.")
    service = v.get("dhis_celery_django_service") or ""
    if service and not SERVICE.match(service if service.endswith(".service") else service + ".service"):
        problems.add("dhis_celery_django_service", f"must be a unit name like gunicorn.service; got {service!r}.")
    for index, user in enumerate(v.get("dhis_celery_flower_users") or []):
        name = user.get("name", "") if isinstance(user, dict) else ""
        if not FLOWER_USER.match(str(name)):
            problems.add(
                f"dhis_celery_flower_users[{index}].name", f"must be letters, digits and _ . @ -; got {name!r}."
            )


def _paths(v: dict, problems: Problems) -> None:
    _path(v.get("dhis_celery_app_dir"), "dhis_celery_app_dir", problems, owned=True)
    _path(v.get("dhis_celery_venv_dir"), "dhis_celery_venv_dir", problems, owned=True)
    conf = _path(v.get("dhis_celery_conf_dir"), "dhis_celery_conf_dir", problems, owned=True)
    if conf.startswith(("/usr/", "/boot/", "/proc/", "/sys/", "/dev/")):
        problems.add("dhis_celery_conf_dir", f"{conf!r} is under a system tree; use a directory under /etc or /srv.")
    for index, path in enumerate(v.get("dhis_celery_environment_files") or []):
        _path(path, f"dhis_celery_environment_files[{index}]", problems)
    for index, path in enumerate(v.get("dhis_celery_python_path") or []):
        _path(path, f"dhis_celery_python_path[{index}]", problems)
    for index, rule in enumerate(v.get("dhis_celery_redis_save") or []):
        if not isinstance(rule, str) or not re.match(r"[0-9]+ [0-9]+\Z", rule):
            problems.add(f"dhis_celery_redis_save[{index}]", f"must be 'SECONDS CHANGES'; got {rule!r}.")
    for index, path in enumerate(v.get("dhis_celery_writable_paths") or []):
        variable = f"dhis_celery_writable_paths[{index}]"
        path = _path(path, variable, problems, owned=True)
        if path == "/" or any(path == tree or path.startswith(tree + "/") for tree in READ_ONLY_TREES):
            problems.add(variable, f"{path!r} would make a system tree writable (undoing ProtectSystem).")
    if v.get("dhis_celery_pip_ca_file"):
        _path(v["dhis_celery_pip_ca_file"], "dhis_celery_pip_ca_file", problems)
    if "dhis_celery_queue_metrics_dir" in v:
        _path(v["dhis_celery_queue_metrics_dir"], "dhis_celery_queue_metrics_dir", problems, owned=True)


def _secrets(v: dict, parts: dict, problems: Problems) -> None:
    if v.get("dhis_celery_state", "present") != "present":
        return
    password, admin = (
        str(v.get("dhis_celery_redis_password") or ""),
        str(v.get("dhis_celery_redis_admin_password") or ""),
    )
    if len(password) < 16:
        problems.add(
            "dhis_celery_redis_password", "is unset or shorter than 16 characters: set it (from Ansible Vault)."
        )
    if parts.get("redis"):
        if len(admin) < 16:
            problems.add(
                "dhis_celery_redis_admin_password",
                "is unset or shorter than 16 characters: set it (from Ansible Vault).",
            )
        elif admin == password:
            problems.add("dhis_celery_redis_admin_password", "must differ from dhis_celery_redis_password.")
    users = v.get("dhis_celery_flower_users") or []
    if parts.get("flower") and not users:
        problems.add(
            "dhis_celery_flower_users",
            "is empty: Flower never runs without basic auth. Add [{name: ops, password: ...}] "
            "or set dhis_celery_flower_enabled: false.",
        )
    minimum = int(v.get("dhis_celery_flower_min_password_length") or 12)
    for index, user in enumerate(users):
        if not isinstance(user, dict) or len(str(user.get("password") or "")) < minimum:
            problems.add(f"dhis_celery_flower_users[{index}].password", f"must be at least {minimum} characters.")


def _settings(v: dict, problems: Problems) -> None:
    ports = {}
    for variable in ("dhis_celery_redis_port", "dhis_celery_redis_cache_port", "dhis_celery_flower_port"):
        ports[variable] = _int(v.get(variable), variable, problems, 1, 65535)
    if (
        v.get("dhis_celery_redis_cache_separate")
        and ports["dhis_celery_redis_cache_port"] == ports["dhis_celery_redis_port"]
        and v.get("dhis_celery_redis_cache_host") == v.get("dhis_celery_redis_host")
    ):
        problems.add(
            "dhis_celery_redis_cache_port",
            f"must differ from dhis_celery_redis_port ({ports['dhis_celery_redis_port']}) when the cache is separate.",
        )
    time_limit = _int(v.get("dhis_celery_task_time_limit", 1800), "dhis_celery_task_time_limit", problems, 1)
    soft = _int(v.get("dhis_celery_task_soft_time_limit", 1740), "dhis_celery_task_soft_time_limit", problems, 1)
    visibility = _int(v.get("dhis_celery_visibility_timeout", 3600), "dhis_celery_visibility_timeout", problems, 1)
    if visibility <= time_limit:
        problems.add(
            "dhis_celery_visibility_timeout",
            f"({visibility}) must exceed dhis_celery_task_time_limit ({time_limit}): running tasks get redelivered.",
        )
    if soft >= time_limit:
        problems.add(
            "dhis_celery_task_soft_time_limit",
            f"({soft}) must be below dhis_celery_task_time_limit ({time_limit}).",
        )
    stop = _int(v.get("dhis_celery_worker_stop_timeout", 1), "dhis_celery_worker_stop_timeout", problems, 1)
    soft_shutdown = _int(
        v.get("dhis_celery_worker_soft_shutdown_timeout", 0), "dhis_celery_worker_soft_shutdown_timeout", problems, 0
    )
    if soft_shutdown >= stop:
        problems.add(
            "dhis_celery_worker_soft_shutdown_timeout",
            f"({soft_shutdown}) must be below dhis_celery_worker_stop_timeout ({stop}): systemd would kill the"
            " worker before its tasks are requeued.",
        )
    revision = v.get("dhis_celery_app_revision", "")
    if not isinstance(revision, (str, int)) or len(str(revision)) > 200 or not str(revision).isprintable():
        problems.add(
            "dhis_celery_app_revision", f"must be one line of at most 200 printable characters; got {revision!r}."
        )
    _int(v.get("dhis_celery_health_timeout", 60), "dhis_celery_health_timeout", problems, 1, 3600)
    # Beat renews its fence at least three times per TTL, so a TTL of a few seconds still holds.
    _int(v.get("dhis_celery_beat_fence_ttl", 15), "dhis_celery_beat_fence_ttl", problems, 3, 3600)
    ping = _int(v.get("dhis_celery_liveness_timeout", 10), "dhis_celery_liveness_timeout", problems, 1, 300)
    interval = _int(v.get("dhis_celery_liveness_interval", 60), "dhis_celery_liveness_interval", problems, 0, 86400)
    _int(v.get("dhis_celery_liveness_failures", 2), "dhis_celery_liveness_failures", problems, 1, 100)
    _int(v.get("dhis_celery_queue_metrics_interval", 15), "dhis_celery_queue_metrics_interval", problems, 0, 3600)
    # A round lasts the ping's timeout plus the start of the celery command (a few seconds).
    if 0 < interval < ping + 5:
        problems.add(
            "dhis_celery_liveness_interval",
            f"({interval}) must leave a ping time to answer: at least dhis_celery_liveness_timeout ({ping}) + 5 s,"
            " or 0 to turn the liveness rounds off.",
        )


def _sans(v: dict, problems: Problems) -> set[str] | None:
    """The names and addresses the broker's certificate carries: the given certificate's
    subjectAltNames, else dhis_celery_redis_tls_names (the certificate the role issues)."""
    cert = str(v.get("dhis_celery_redis_tls_cert") or "")
    if not cert:
        names = v.get("dhis_celery_redis_tls_names") or []
        if not isinstance(names, list) or not names:
            problems.add("dhis_celery_redis_tls_names", "must list the names and addresses clients use to reach Redis.")
            return None
        return {_address(str(name)) for name in names}
    from cryptography import x509  # only when a certificate is given

    try:
        parsed = x509.load_pem_x509_certificate(cert.encode())
        alt = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound) as exc:
        problems.add("dhis_celery_redis_tls_cert", f"is not a PEM certificate with subjectAltNames ({exc}).")
        return None
    return {_address(str(name)) for name in alt.get_values_for_type(x509.DNSName)} | {
        str(address) for address in alt.get_values_for_type(x509.IPAddress)
    }


def _address(name: str) -> str:
    """An IP address in its normal form (::1, not 0:0::1); a DNS name in lower case."""
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name.lower()


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _san(name: str) -> str:
    try:
        return f"IP:{ipaddress.ip_address(name)}"
    except ValueError:
        return f"DNS:{name.lower()}"


def _tls(v: dict, parts: dict, problems: Problems) -> None:
    if not v.get("dhis_celery_redis_tls") or v.get("dhis_celery_state", "present") != "present":
        return
    if PEM_CERT not in str(v.get("dhis_celery_tls_ca_cert") or ""):
        problems.add("dhis_celery_tls_ca_cert", "must be the PEM text of the CA clients trust (dhis_celery_redis_tls).")
    cert, key = bool(v.get("dhis_celery_redis_tls_cert")), bool(v.get("dhis_celery_redis_tls_key"))
    if cert != key:
        problems.add(
            "dhis_celery_redis_tls_key" if cert else "dhis_celery_redis_tls_cert",
            "is missing: give the broker's certificate and its key together, or neither (the role issues them).",
        )
    elif parts.get("redis") and not cert and "PRIVATE KEY-----" not in str(v.get("dhis_celery_tls_ca_key") or ""):
        problems.add(
            "dhis_celery_tls_ca_key",
            "must be the PEM text of the CA's key (from Ansible Vault) for the role to issue the broker's "
            "certificate; or give dhis_celery_redis_tls_cert and dhis_celery_redis_tls_key.",
        )
    days = _int(v.get("dhis_celery_tls_cert_days", 365), "dhis_celery_tls_cert_days", problems, 2, 3650)
    renew = _int(v.get("dhis_celery_tls_renew_days", 30), "dhis_celery_tls_renew_days", problems, 1, 3650)
    if not cert and renew >= days:
        problems.add(
            "dhis_celery_tls_renew_days",
            f"({renew}) must be below dhis_celery_tls_cert_days ({days}), or every run renews.",
        )
    sans = _sans(v, problems)
    if sans is None:
        return
    # What this host connects to: the broker and cache hosts from the app, loopback from the broker.
    used = {}
    if parts.get("app", True):
        used["dhis_celery_redis_host"] = v.get("dhis_celery_redis_host")
        used["dhis_celery_redis_cache_host"] = v.get("dhis_celery_redis_cache_host")
    if parts.get("redis"):
        used["dhis_celery_redis_bind"] = str((v.get("dhis_celery_redis_bind") or ["127.0.0.1"])[0]).removeprefix("-")
    where = "dhis_celery_redis_tls_cert" if cert else "dhis_celery_redis_tls_names"
    for variable, name in used.items():
        if name and _address(str(name)) not in sans:
            problems.add(
                where,
                f"the broker's certificate does not name {name!r}, which clients use ({variable}): "
                f"they would refuse it. Add it to the certificate's names.",
            )


def _pip_packages(v: dict, workers: list[dict], problems: Problems) -> list[str]:
    """dhis_celery_pip_packages, then what the pools this host's workers use need (gevent's own
    package for a gevent pool), each once."""
    packages = [str(p) for p in _list(v.get("dhis_celery_pip_packages"))]
    extra = v.get("dhis_celery_pip_pool_packages") or {}
    if not isinstance(extra, dict):
        problems.add("dhis_celery_pip_pool_packages", "must be a mapping of pool: [pip requirement, ...].")
        extra = {}
    for pool in dict.fromkeys(w["pool"] for w in workers):
        wanted = extra.get(pool) or []
        if not isinstance(wanted, list) or not all(isinstance(r, str) and r for r in wanted):
            problems.add("dhis_celery_pip_pool_packages", f"{pool}: must be a list of pip requirements.")
            continue
        packages += wanted
    return list(dict.fromkeys(packages))


def dhis_celery_plan(inputs: dict, parts: dict | None = None, facts: dict | None = None) -> dict:
    """This host's plan: normalised values the role reads, and the problems found in the inputs."""
    v, parts, facts = dict(inputs), dict(parts or {}), dict(facts or {})
    problems = Problems()
    for name in sorted(set(v) - PEM_VARIABLES):
        _control_chars(v[name], name, problems)
    _names(v, problems)
    _paths(v, problems)
    _environment(v, problems)
    _acl(v, problems)
    _serializers(v, problems)
    _listen(v, facts, problems)
    _secrets(v, parts, problems)
    _settings(v, problems)
    _tls(v, parts, problems)
    workers = _workers(v, parts, int(facts.get("vcpus") or 2), problems) if parts.get("workers", True) else []

    prefix = str(v.get("dhis_celery_unit_prefix", "celery"))
    conf_dir = str(v.get("dhis_celery_conf_dir", ""))
    routes = v.get("dhis_celery_task_routes") or {}
    if not isinstance(routes, dict):
        problems.add("dhis_celery_task_routes", "must be a mapping of task pattern: {queue: NAME}.")
        routes = {}
    routed = [str(route.get("queue")) for route in routes.values() if isinstance(route, dict) and route.get("queue")]
    routed += [str(v.get("dhis_celery_default_queue", "celery"))]
    routed += [
        str(t["queue"]) for t in v.get("dhis_celery_periodic_tasks") or [] if isinstance(t, dict) and t.get("queue")
    ]
    for queue in routed:
        if not QUEUE.match(queue):
            problems.add("dhis_celery_task_routes", f"queue names are letters, digits and _ . : -; got {queue!r}.")
    routed = list(dict.fromkeys(routed))
    consumed = list(dict.fromkeys(q for w in workers for q in w["queues"]))
    beat, flower = bool(parts.get("beat")), bool(parts.get("flower"))
    units = {
        "worker_template": f"{prefix}-worker@.service",
        "workers": [w["unit"] for w in workers],
        "beat": f"{prefix}-beat.service",
        "flower": f"{prefix}-flower.service",
        "target": f"{prefix}.target",
        "liveness": f"{prefix}-liveness",
        "queue_metrics": f"{prefix}-queue-metrics",
    }
    service = str(v.get("dhis_celery_django_service") or "")
    if service and not service.endswith(".service"):
        service += ".service"
    pip_packages = _pip_packages(v, workers, problems)
    return {
        # The cap on a worker's connections to a Redis broker, when kombu's default is too low:
        # each greenlet of a green pool acknowledges its task on a connection of its own, and past
        # the cap kombu drops the worker's broker connection (MaxConnectionsError); a gevent
        # worker then received tasks and ran none. 0: kombu's default (threads and prefork
        # acknowledge from the worker's one event loop).
        "broker_max_connections": _broker_max_connections(v, workers),
        "workers": workers,
        "worker_names": [w["name"] for w in workers],
        # What the role installs into the virtualenv on this host.
        "pip_packages": pip_packages,
        "routed_queues": routed,
        "consumed_queues": consumed,
        "unrouted_queues": [q for q in routed if q not in consumed],
        "units": units,
        # Celery units this host runs, in start order.
        "running_units": units["workers"] + ([units["beat"]] if beat else []) + ([units["flower"]] if flower else []),
        "paths": {
            "conf_dir": conf_dir,
            "python_dir": f"{conf_dir}/python",
            "staging_dir": f"{conf_dir}/python.new",
            "env_file": f"{conf_dir}/environment",
            "cli": f"/usr/local/bin/{v.get('dhis_celery_cli_name', '')}",
            "web_dropin_dir": f"/etc/systemd/system/{service}.d" if service else "",
        },
        "web_unit": service,
        # `celery -A` target: the project's own app, or the role's bootstrap app for projects without one.
        "celery_app": str(v.get("dhis_celery_app_module") or "dhis_celery_bootstrap.celery:app"),
        # subjectAltNames of the certificate the role issues for Redis (openssl's TYPE:value form).
        "tls_sans": [_san(str(name)) for name in _list(v.get("dhis_celery_redis_tls_names")) if str(name)],
        "problems": list(problems),
    }


def _broker_max_connections(v: dict, workers: list[dict]) -> int:
    if v.get("dhis_celery_broker", "redis") != "redis":
        return 0
    green = [w["concurrency"] for w in workers if w["pool"] in GREEN_POOLS]
    return KOMBU_REDIS_MAX_CONNECTIONS + max(green) if green else 0


def redis_reached_remotely(groups: dict, redis: str, broker: str, workers: str, others: list[str]) -> bool:
    """Whether some host reaches Redis over the network, so that Redis listens beyond loopback
    and its clients name its host. Yes when a host of the worker group or of the others (Beat,
    Flower, web) is not the Redis host (the first of the `redis` group), when the `redis` group
    holds more hosts than that one (Redis runs on the first alone: the others are its clients),
    or when some worker host is not a broker host: web hosts need no group, so a layout whose
    workers sit apart from the broker hosts may serve Django from hosts no group names. The
    inventory's groups alone decide, never the play's hosts: a run limited to some hosts must not
    take Redis off the network under the others."""

    def hosts(*names: str) -> set[str]:
        return {host for name in names for host in groups.get(name) or []}

    redis_host = set(list(groups.get(redis) or [])[:1])
    apart = bool(redis_host) and bool(hosts(redis, workers, *others) - redis_host)
    return apart or (bool(hosts(broker)) and bool(hosts(workers) - hosts(broker)))


def systemd_env_quote(value: Any) -> str:
    """A value for a systemd EnvironmentFile line, read back verbatim by systemd.

    Inside double quotes systemd's parser un-escapes exactly \\ " ` and $, keeps every other
    character (any Unicode) as is, and expands nothing.
    """
    text = str(value)
    for char in ("\\", '"', "`", "$"):
        text = text.replace(char, "\\" + char)
    return f'"{text}"'


def python_literal(value: Any) -> str:
    """A Python literal for a string or JSON-like value that keeps every Unicode character as is
    (JSON's ASCII escapes would turn non-BMP characters into lone surrogates in Python)."""
    return repr(json.loads(json.dumps(value)))


def fingerprint(value: Any, *roots: str) -> str:
    """sha256 of a JSON-like value and of every file under the given directories (path and
    content): a run's inputs and the role's own code, hashed on the controller."""
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass"))
    for root in roots:
        for directory, subdirs, names in os.walk(os.path.realpath(root)):
            subdirs[:] = sorted(d for d in subdirs if d != "__pycache__")
            for name in sorted(names):
                path = os.path.join(directory, name)
                digest.update(os.path.relpath(path, root).encode() + b"\0")
                with open(path, "rb") as handle:
                    digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()


class FilterModule:
    def filters(self) -> dict:
        return {
            "dhis_celery_plan": dhis_celery_plan,
            "dhis_celery_env_quote": systemd_env_quote,
            "dhis_celery_py": python_literal,
            "dhis_celery_fingerprint": fingerprint,
            "dhis_celery_redis_reached_remotely": redis_reached_remotely,
        }
