"""The role's interface is stated three times; these tests keep the three in step."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ROLE = ROOT / "roles/dhis_celery"


def defaults() -> dict:
    return yaml.safe_load((ROLE / "defaults/main.yml").read_text())


def spec_options() -> dict:
    return yaml.safe_load((ROLE / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]


def test_every_default_has_a_spec_and_every_spec_a_default() -> None:
    assert set(defaults()) == set(spec_options())


def test_every_public_variable_is_prefixed() -> None:
    assert all(name.startswith("dhis_celery_") for name in defaults())


def test_plain_defaults_match_the_spec_defaults() -> None:
    specs = spec_options()
    for name, value in defaults().items():
        if isinstance(value, str) and "{{" in value:
            assert "default" not in specs[name], name
        else:
            assert specs[name].get("default") == value, name


def test_every_spec_has_a_description_and_type() -> None:
    for name, spec in spec_options().items():
        assert spec.get("description") and spec.get("type"), name


def test_readme_documents_every_variable() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in defaults() if f"`{name}`" not in readme]
    assert not missing, f"README.md does not document {missing}"


def test_internal_variables_are_double_underscored() -> None:
    internal = yaml.safe_load((ROLE / "vars/main.yml").read_text())
    assert all(name.startswith("__dhis_celery_") for name in internal)
