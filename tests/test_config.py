"""Every setting is documented where operators look for it."""

from pathlib import Path

import pytest

from portal.config import REQUIRED_SECRETS, Defaults, production_problems, status_map

ROOT = Path(__file__).resolve().parent.parent
# Flask and extension settings the portal sets but does not offer as PORTAL_* knobs.
INTERNAL = ("SQLALCHEMY_", "WTF_", "SESSION_", "MAX_CONTENT_LENGTH")
SETTINGS = [name for name in vars(Defaults) if name.isupper() and not name.startswith(INTERNAL)]


@pytest.mark.parametrize("name", SETTINGS)
def test_every_setting_is_in_the_readme_and_env_example(name):
    assert f"`PORTAL_{name}`" in (ROOT / "README.md").read_text()
    assert f"\nPORTAL_{name}=" in (ROOT / ".env.example").read_text()


def test_a_copy_of_env_example_is_refused_until_every_secret_is_replaced():
    lines = (ROOT / ".env.example").read_text().splitlines()
    example = dict(line.split("=", 1) for line in lines if line.startswith("PORTAL_"))
    config = {key: example[env_name] for key, (env_name, _) in REQUIRED_SECRETS.items()}

    problems = production_problems(config)

    for env_name, _ in REQUIRED_SECRETS.values():
        assert f"{env_name} is still the development default" in problems


def test_status_map_overrides_and_extends_the_defaults_case_blind():
    table = status_map({"STATUS_MAP": {"Approved": "needs_review", "X-NEW": "verified"}})
    assert table["approved"] == "needs_review"
    assert table["x-new"] == "verified"
    assert table["failed"] == "failed"
