"""The per-repository size limit of the pre-push checks: `max_file_size_mb` in
.github/patchwright.yml (validated like the other keys, accepted by `check-config`,
documented in the README's configuration block)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from bot.__main__ import check_config
from bot.config import RepoConfig, RepoConfigError, parse_repo_config

README = Path(__file__).resolve().parents[2] / "README.md"


def test_default_and_valid_values() -> None:
    assert RepoConfig().max_file_size_mb == 10
    assert parse_repo_config("max_file_size_mb: 2.5\n").max_file_size_mb == 2.5
    assert parse_repo_config("max_file_size_mb: 100\n").max_file_size_mb == 100


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("0", "greater than 0"), ("-1", "greater than 0"), ("101", "less than or equal to 100"), ("10MB", "valid number")],
)
def test_invalid_values_name_the_key_and_line(value: str, fragment: str) -> None:
    with pytest.raises(RepoConfigError) as refused:
        parse_repo_config(f"trigger_label: x\nmax_file_size_mb: {value}\n")
    [problem] = refused.value.problems
    assert (problem.path, problem.line) == ("max_file_size_mb", 2) and fragment in problem.message


def test_check_config_accepts_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "patchwright.yml"
    good.write_text("max_file_size_mb: 25\n")
    assert check_config(good) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok\n") and "max_file_size_mb: 25.0" in out
    bad = tmp_path / "bad.yml"
    bad.write_text("max_file_size_mb: 500\n")
    assert check_config(bad) == 1
    assert "bad.yml:1: max_file_size_mb:" in capsys.readouterr().err


def test_the_readme_documents_the_key_with_its_default() -> None:
    block = re.search(r"```yaml\n(trigger_label:.*?)```", README.read_text(), re.S)
    assert block is not None
    documented = yaml.safe_load(block.group(1))
    assert documented["max_file_size_mb"] == RepoConfig().max_file_size_mb
    assert parse_repo_config(block.group(1)).max_file_size_mb == RepoConfig().max_file_size_mb
