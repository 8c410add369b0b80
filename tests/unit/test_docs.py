"""The README stays true: every setting is documented, and CI runs the README's test command."""

import tomllib
from pathlib import Path

from sdserve.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_in_the_readme_config_reference():
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"| `{name}` |" not in readme]
    assert not missing, f"README configuration reference lacks: {missing}"


def test_ci_runs_the_readme_test_command():
    """The README's test command is .ci/run itself, and .ci/run installs before it tests."""
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "```sh\nbash .ci/run\n```" in readme
    assert "scripts/ci/system-packages.sh" in ci
    assert ".venv/bin/python -m pytest -q" in ci
    assert ci.index("pip install") < ci.index("pytest")


def test_one_python_floor_everywhere():
    """requires-python, the README and mypy's target name the same oldest Python, so the type
    check flags stdlib use newer than what the package claims to run on."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    floor = meta["project"]["requires-python"].removeprefix(">=")
    assert meta["tool"]["mypy"]["python_version"] == floor
    assert f"Python {floor}+" in (ROOT / "README.md").read_text()
