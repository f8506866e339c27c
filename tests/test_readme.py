"""The README is the front door: its config reference lists every field, and .ci/run runs
exactly the README's test command."""

from pathlib import Path

from grokscope.config import field_reference

ROOT = Path(__file__).resolve().parents[1]


def test_every_config_field_is_documented():
    readme = (ROOT / "README.md").read_text()
    missing = [name for name, _, _ in field_reference() if f"| `{name}` |" not in readme]
    assert not missing, f"README config reference lacks {missing}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line for line in ci.splitlines() if "pytest" in line).strip()
    assert command in readme
