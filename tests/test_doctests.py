"""The examples in the docstrings run (the API reference shows them)."""

from __future__ import annotations

import doctest
import importlib

import pytest

# Modules whose public functions carry examples; each must have some, and all must pass.
MODULES = (
    "deeplesion.data.lesion",
    "deeplesion.data.paths",
    "deeplesion.data.slices",
    "deeplesion.data.windowing",
    "deeplesion.data.measurement",
    "deeplesion.data.context",
    "deeplesion.fetch.manifest",
    "deeplesion.evaluation.sweep",
    "deeplesion.evaluation.froc",
    "deeplesion.analysis.growth",
    "deeplesion.analysis.tracks",
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_pass(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module) if t.examples]
    assert tests, f"{name} has no docstring examples"
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_a_wrong_example_is_caught():
    """The runner is live: an example with a wrong expected output fails."""
    parser = doctest.DocTestParser()
    test = parser.get_doctest(">>> 1 + 1\n3\n", {}, "probe", None, 0)
    runner = doctest.DocTestRunner()
    runner.run(test, out=lambda _: None)
    assert runner.summarize(verbose=False).failed == 1
