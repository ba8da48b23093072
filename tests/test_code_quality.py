"""The checks CI runs on the code itself: lint, format, import layering (and types)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import REPO


def _run(*command: str) -> subprocess.CompletedProcess:
    tool = shutil.which(command[0], path=str(REPO / ".venv" / "bin")) or shutil.which(command[0])
    if tool is None:
        pytest.fail(f"{command[0]} is not installed (pip install -e '.[test]')")
    return subprocess.run([tool, *command[1:]], cwd=REPO, capture_output=True, text=True)


@pytest.mark.parametrize(
    "command",
    [
        ("ruff", "check", "src", "tests", "benchmarks", "docs"),
        ("ruff", "format", "--check", "src", "tests", "benchmarks", "docs"),
        ("lint-imports",),
    ],
    ids=["ruff-check", "ruff-format", "import-layers"],
)
def test_tool_passes(command):
    result = _run(*command)
    assert result.returncode == 0, result.stdout + result.stderr


def test_layering_contract_catches_an_upward_import(tmp_path):
    """The layers contract is live: a data module importing the CLI breaks it."""
    probe = REPO / "src" / "deeplesion" / "data" / "_layering_probe.py"
    probe.write_text("import deeplesion.cli\n")
    try:
        result = _run("lint-imports")
    finally:
        probe.unlink()
    assert result.returncode != 0
    assert "deeplesion.data._layering_probe" in result.stdout
