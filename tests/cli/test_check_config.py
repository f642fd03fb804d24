"""`patchwright check-config FILE` through the real console entry point."""

import subprocess
import sys
from pathlib import Path


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_valid_file_prints_ok_and_effective_config(tmp_path: Path):
    f = tmp_path / "patchwright.yml"
    f.write_text("trigger_label: ai\nbudget:\n  max_attempts: 3\n")
    proc = run("check-config", str(f), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "ok"
    assert "trigger_label: ai" in lines
    assert "  max_attempts: 3" in lines
    assert "  max_cost_usd: 10.0" in lines  # defaults are shown too


def test_invalid_file_lists_every_error_with_location(tmp_path: Path):
    f = tmp_path / "patchwright.yml"
    f.write_text("budget:\n  max_attempts: -1\nci:\n  ignor: [lint]\n")
    proc = run("check-config", str(f), cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert f"{f}:2: budget.max_attempts:" in proc.stderr
    assert f"{f}:4: ci.ignor: unknown key" in proc.stderr
    assert "2 error(s)" in proc.stderr


def test_missing_file_is_an_error(tmp_path: Path):
    proc = run("check-config", str(tmp_path / "absent.yml"), cwd=tmp_path)
    assert proc.returncode == 1
    assert "cannot read" in proc.stderr


def test_serve_without_secret_refuses_and_names_the_variable(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "serve"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 2
    assert "PATCHWRIGHT_WEBHOOK_SECRET" in proc.stderr
