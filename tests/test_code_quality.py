"""The checks CI runs on the code itself: lint, format, import layering (and types)."""

from __future__ import annotations

import ast
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


def test_types_check():
    """mypy on src/ with the pyproject configuration."""
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    edges = {
        m: sorted(graph.find_modules_directly_imported_by(m) & graph.modules) for m in graph.modules
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if i < len(edges[node]):
                work.append((node, i + 1))
                nxt = edges[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return found


def test_no_import_cycles():
    """No two modules import each other, directly or through others, counting the imports
    inside functions (which hide a cycle from Python but not from a reader)."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("deeplesion")
    cycles = _cycles(graph)
    details = [
        f"{a} -> {b} (line {d['line_number']})"
        for cycle in cycles
        for a in cycle
        for b in cycle
        for d in graph.get_import_details(importer=a, imported=b)
    ]
    assert not cycles, "\n".join(details)


def test_cycle_finder_finds_a_cycle():
    """The finder itself: a three-module ring and a self-contained pair are reported."""

    from types import SimpleNamespace

    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": set()}
    graph = SimpleNamespace(modules=set(edges), find_modules_directly_imported_by=edges.get)
    assert _cycles(graph) == [["a", "b", "c"]]
    edges["e"] = {"d"}
    assert sorted(_cycles(graph)) == [["a", "b", "c"], ["d", "e"]]


#: Raised because the language asks for them (``__getattr__``, iterators, abstract methods).
PROTOCOL_EXCEPTIONS = (AttributeError, StopIteration, NotImplementedError)


def _raised_builtins(path) -> list[str]:
    """``raise ValueError(...)``-style statements that raise a bare built-in exception."""
    import ast
    import builtins

    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Raise) and node.exc is not None:
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            builtin = getattr(builtins, target.id, None) if isinstance(target, ast.Name) else None
            if (
                isinstance(builtin, type)
                and issubclass(builtin, Exception)
                and builtin not in PROTOCOL_EXCEPTIONS
            ):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {builtin.__name__}")
    return found


def test_every_raise_is_a_package_error():
    """errors.py's promise: every error the package raises derives from DeepLesionError."""
    raised = [
        hit
        for path in sorted((REPO / "src" / "deeplesion").rglob("*.py"))
        for hit in _raised_builtins(path)
    ]
    assert raised == []


def test_every_error_class_derives_from_the_base_and_a_builtin():
    import importlib
    import inspect
    import pkgutil

    import deeplesion
    from deeplesion.errors import DeepLesionError

    bad = []
    for info in pkgutil.walk_packages(deeplesion.__path__, "deeplesion."):
        if info.name.startswith("deeplesion.cli") or info.name.endswith("__main__"):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an optional extra that is not installed
            continue
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or name.startswith("_"):
                continue
            if issubclass(cls, BaseException) and not (
                issubclass(cls, DeepLesionError)
                and any(b.__module__ == "builtins" and b is not Exception for b in cls.__mro__)
            ):
                bad.append(f"{module.__name__}.{name}")
    assert bad == []


def _modules_after(code: str) -> set[str]:
    """Top-level packages in sys.modules after running ``code`` in a fresh interpreter."""
    import json
    import os
    import sys

    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


HEAVY = ("pandas", "matplotlib", "nibabel", "torch", "scipy", "PIL")


def test_import_deeplesion_is_light():
    loaded = _modules_after("import deeplesion")
    assert not [m for m in loaded if m.split(".")[0] in HEAVY]


def test_cli_help_imports_no_command_module():
    loaded = _modules_after(
        "import sys\nfrom deeplesion.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    )
    assert not [m for m in loaded if m.split(".")[0] in (*HEAVY, "numpy", "rich")]
    assert not [m for m in loaded if m.startswith("deeplesion.") and m != "deeplesion.cli"]


def test_top_level_names_resolve():
    import deeplesion
    from deeplesion.data import annotations, lesion, slices, windowing

    assert deeplesion.load_lesions is annotations.load_lesions
    assert deeplesion.Lesion is lesion.Lesion is annotations.Lesion
    assert deeplesion.read_hu is slices.read_hu
    assert deeplesion.PRESETS is windowing.WINDOW_PRESETS is deeplesion.WINDOW_PRESETS
    assert all(getattr(deeplesion, name) is not None for name in deeplesion.__all__)
    with pytest.raises(AttributeError):
        _ = deeplesion.no_such_name


def test_lazy_command_table_matches_the_commands():
    """Each entry of the CLI's table names a command whose own help starts with the line
    the table shows, so ``--help`` without imports says what the commands say."""
    import importlib

    import click

    from deeplesion.cli import COMMANDS

    for name, (module, attribute, help_line) in COMMANDS.items():
        command = getattr(importlib.import_module(f"deeplesion.cli.{module}"), attribute)
        assert isinstance(command, click.Command)
        assert command.name == name
        first = " ".join(command.help.split("\n\n")[0].split())
        assert first == help_line, name


def _px1_shifts(tree: ast.AST) -> list[int]:
    """Lines that add or subtract a literal 1 to a DL_info (``_px1``) coordinate.

    An inclusive extent (``x2_px1 - x1_px1 + 1``) is a pixel count, not a conversion.
    """
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.GeneratorExp, ast.ListComp)):
            from_px1 = any("px1" in ast.unparse(c.iter) for c in node.generators)
            if from_px1 and any(_adds_one(n) for n in ast.walk(node.elt)):
                lines.append(node.lineno)
        elif _adds_one(node):
            other = node.left if _is_one(node.right) else node.right
            is_extent = isinstance(other, ast.BinOp) and isinstance(other.op, ast.Sub)
            if "px1" in ast.unparse(other) and not is_extent:
                lines.append(node.lineno)
    return lines


def _is_one(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value == 1


def _adds_one(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.BinOp)
        and isinstance(node.op, (ast.Add, ast.Sub))
        and (_is_one(node.left) or _is_one(node.right))
    )


def test_px1_conversions_only_in_the_conversion_functions():
    """README: px1_to_index / index_to_px1 are where a DL_info pixel becomes an index."""
    home = REPO / "src" / "deeplesion" / "data" / "lesion.py"
    found = [
        f"{path.relative_to(REPO)}:{line}"
        for path in sorted((REPO / "src").rglob("*.py"))
        if path != home
        for line in _px1_shifts(ast.parse(path.read_text()))
    ]
    assert found == []


def test_px1_shift_finder_sees_a_shift():
    assert _px1_shifts(ast.parse("a = (v - 1.0 for v in lesion.box_px1)")) == [1]
    assert _px1_shifts(ast.parse("x = lesion.box_px1[0] + 1")) == [1]
    assert _px1_shifts(ast.parse("w = x2_px1 - x1_px1 + 1")) == []
