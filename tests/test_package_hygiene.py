"""What a package owes its users besides code: licence, version, types, changelog, citation."""

from __future__ import annotations

import tomllib

from click.testing import CliRunner

import deeplesion
from conftest import REPO
from deeplesion.cli import main

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
CITATION = ("Yan K, Wang X, Lu L, Summers RM", "036501", "2018")


def test_licence_file_is_the_declared_licence():
    assert PYPROJECT["project"]["license"] == {"text": "Apache-2.0"}
    words = (REPO / "LICENSE").read_text().split()
    assert words[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in (REPO / "LICENSE").read_text()


def test_version_is_the_same_everywhere():
    version = PYPROJECT["project"]["version"]
    assert deeplesion.__version__ == version
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"deeplesion, version {version}"


def test_py_typed_ships_with_the_package():
    assert (REPO / "src" / "deeplesion" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["deeplesion"]


def test_changelog_has_a_section_for_the_current_work():
    text = (REPO / "CHANGELOG.md").read_text()
    assert "## Unreleased" in text or f"## {deeplesion.__version__}" in text


def test_docs_extra_is_part_of_the_test_extra():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert any(d.startswith("mkdocs") for d in extras["docs"])
    assert "deeplesion[docs]" in extras["test"]


def test_citation_in_readme_and_info(sample_root):
    readme = " ".join((REPO / "README.md").read_text().split())
    result = CliRunner().invoke(main, ["info", str(sample_root)], terminal_width=400)
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    for part in CITATION:
        assert part in readme
        assert part in output
    assert "nihcc.app.box.com/v/DeepLesion" in output
