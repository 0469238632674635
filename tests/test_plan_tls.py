"""TLS to Redis in the plan: what is refused before any change (naming the variable), and the
names the role's certificate carries. Certificates come from molecule/shared/lib/dhis_certs.py,
made as an operator's CA would make them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from test_plan import FACTS, PARTS, PLAN, good

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "molecule/shared/lib"))

from dhis_certs import CA_KEY_PEM, CA_PEM, server_cert

TLS: dict[str, Any] = {
    "dhis_celery_redis_tls": True,
    "dhis_celery_tls_ca_cert": CA_PEM,
    "dhis_celery_tls_ca_key": CA_KEY_PEM,
    "dhis_celery_redis_tls_names": ["broker.internal", "localhost", "127.0.0.1", "::1"],
    "dhis_celery_redis_host": "broker.internal",
    "dhis_celery_redis_cache_host": "broker.internal",
}
KEY = "-----BEGIN PRIVATE KEY-----\nMIG...\n-----END PRIVATE KEY-----\n"


def plan(parts: dict[str, bool] | None = None, **overrides: Any) -> dict[str, Any]:
    return PLAN.dhis_celery_plan({**good(), **TLS, **overrides}, {**PARTS, "app": True, **(parts or {})}, FACTS)


def test_tls_with_the_ca_and_its_key_has_no_problem_and_names_what_clients_use() -> None:
    result = plan()
    assert result["problems"] == []
    assert result["tls_sans"] == ["DNS:broker.internal", "DNS:localhost", "IP:127.0.0.1", "IP:::1"]


def test_a_given_certificate_naming_the_broker_is_accepted_ip_forms_normalised() -> None:
    cert = server_cert("broker.internal", "127.0.0.1", "0:0:0:0:0:0:0:1")
    assert (
        plan(dhis_celery_redis_tls_cert=cert, dhis_celery_redis_tls_key=KEY, dhis_celery_tls_ca_key="")["problems"]
        == []
    )


# (id, overrides, parts, the variable the message must start with)
BAD: list[tuple[str, dict[str, Any], dict[str, bool], str]] = [
    ("no-ca", {"dhis_celery_tls_ca_cert": ""}, {}, "dhis_celery_tls_ca_cert"),
    ("ca-not-pem", {"dhis_celery_tls_ca_cert": "ca.pem"}, {}, "dhis_celery_tls_ca_cert"),
    ("broker-without-ca-key", {"dhis_celery_tls_ca_key": ""}, {"redis": True}, "dhis_celery_tls_ca_key"),
    (
        "cert-without-key",
        {"dhis_celery_redis_tls_cert": server_cert("broker.internal")},
        {},
        "dhis_celery_redis_tls_key",
    ),
    ("key-without-cert", {"dhis_celery_redis_tls_key": KEY}, {}, "dhis_celery_redis_tls_cert"),
    (
        "cert-not-pem",
        {"dhis_celery_redis_tls_cert": "x", "dhis_celery_redis_tls_key": KEY},
        {},
        "dhis_celery_redis_tls_cert",
    ),
    ("names-miss-the-broker", {"dhis_celery_redis_host": "redis.internal"}, {}, "dhis_celery_redis_tls_names"),
    ("names-miss-the-cache", {"dhis_celery_redis_cache_host": "10.0.0.9"}, {}, "dhis_celery_redis_tls_names"),
    (
        "names-miss-loopback",
        {"dhis_celery_redis_tls_names": ["broker.internal"]},
        {"redis": True},
        "dhis_celery_redis_tls_names",
    ),
    ("names-empty", {"dhis_celery_redis_tls_names": []}, {}, "dhis_celery_redis_tls_names"),
    (
        "cert-misses-the-broker",
        {"dhis_celery_redis_tls_cert": server_cert("other.internal", "127.0.0.1"), "dhis_celery_redis_tls_key": KEY},
        {},
        "dhis_celery_redis_tls_cert",
    ),
    ("renew-past-validity", {"dhis_celery_tls_renew_days": 365}, {}, "dhis_celery_tls_renew_days"),
    ("days-zero", {"dhis_celery_tls_cert_days": 0}, {}, "dhis_celery_tls_cert_days"),
]


@pytest.mark.parametrize(("overrides", "parts", "variable"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_tls_input_is_refused_naming_its_variable(overrides: dict, parts: dict, variable: str) -> None:
    found = plan(parts, **overrides)["problems"]
    assert any(p.startswith(variable) for p in found), found


def test_an_app_host_needs_no_ca_key_and_pem_newlines_are_not_control_characters() -> None:
    assert plan({"redis": False}, dhis_celery_tls_ca_key="")["problems"] == []


def test_the_ca_key_is_never_echoed() -> None:
    found = plan(dhis_celery_tls_ca_key="-----BEGIN NOT A KEY----- secret-bits")["problems"]
    assert found and all("secret-bits" not in p for p in found)
