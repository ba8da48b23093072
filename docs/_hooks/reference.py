"""MkDocs hook: pages made from the code, so that they follow it.

- ``reference/<subpackage>.md``: one API page per subpackage, a ``:::`` block (mkdocstrings)
  for each public module found in ``src/deeplesion/<subpackage>/``; added to the nav.
- ``commands.md``: every ``deeplesion`` command with its ``--help`` text, from click.
- ``changelog.md``: the repository's CHANGELOG.md.

Names that prose pages link to (``[load_lesions][deeplesion.data.annotations.load_lesions]``)
must exist, or the strict build fails: a renamed function cannot leave a stale page.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from mkdocs.structure.files import File, Files

# Library subpackages in this order first; any other subpackage found in src/deeplesion/
# follows (alphabetically). The CLI is documented on the commands page.
ORDER = ("data", "fetch", "convert", "review", "training", "segmentation", "evaluation", "analysis")
NOT_LIBRARY = ("cli",)
TOP_MODULES = ("deeplesion.errors", "deeplesion.demo")
#: What each subpackage holds, where its ``__init__`` has no docstring of its own.
SUMMARIES = {
    "data": "DL_info.csv records, validation, slices and HU, windows, paths, volumes, context, "
    "tags, measurement, the synthetic sample (no torch, no plotting)",
    "fetch": "downloads, checksums, extraction, completeness of a copy",
    "convert": "NIfTI sub-volumes and other exports",
    "review": "key slices with lesions drawn, crops, galleries, the body map, the HTML report",
    "training": "preprocessing presets, PyTorch datasets, COCO export, the baseline detector",
    "segmentation": "lesion masks from RECIST: ellipse, GrabCut, best of several, 3-D propagation",
    "evaluation": "the published protocols: key-slice FROC, 3-D FROC, tagging, measurement",
    "analysis": "growth tracks and RECIST responses, retrieval, figures",
}


def _src(config) -> Path:
    return Path(config["config_file_path"]).parent / "src"


def subpackages(src: Path) -> list[str]:
    """Every library subpackage of ``src/deeplesion``, in reading order."""
    found = {
        p.parent.name
        for p in (src / "deeplesion").glob("*/__init__.py")
        if p.parent.name not in NOT_LIBRARY
    }
    return [n for n in ORDER if n in found] + sorted(found - set(ORDER))


def _modules(src: Path, subpackage: str) -> list[str]:
    folder = src / "deeplesion" / subpackage
    return [
        f"deeplesion.{subpackage}.{p.stem}"
        for p in sorted(folder.glob("*.py"))
        if not p.name.startswith("_")
    ]


def _first_line(src: Path, subpackage: str) -> str:
    init = src / "deeplesion" / subpackage / "__init__.py"
    text = init.read_text(encoding="utf-8") if init.is_file() else ""
    for quote in ('"""', "'''"):
        if text.lstrip().startswith(quote):
            return text.lstrip()[3:].split(quote)[0].strip().splitlines()[0]
    return ""


def on_config(config):
    pages = [{"deeplesion": "reference/index.md"}]
    names = subpackages(_src(config))
    pages += [{f"deeplesion.{name}": f"reference/{name}.md"} for name in names]
    nav = config["nav"]
    at = next((i for i, item in enumerate(nav) if "About" in item), len(nav))
    nav.insert(at, {"API reference": pages})
    return config


def _reference_page(src: Path, subpackage: str) -> str:
    lines = [f"# deeplesion.{subpackage}", "", _first_line(src, subpackage), ""]
    for module in _modules(src, subpackage):
        lines += [f"::: {module}", ""]
    return "\n".join(lines)


def _index_page(src: Path) -> str:
    lines = [
        "# API reference",
        "",
        "Generated from the docstrings of the code. The package is layered: the data layer",
        "at the bottom (no torch, no plotting), then fetch, convert and evaluation, then",
        "review and training, then analysis; the command line sits on top and only calls",
        "these functions. Library functions print nothing: they return records, raise typed",
        "errors (all derive from `DeepLesionError` and the built-in they refine) and take an",
        "optional `progress` callback.",
        "",
        "| subpackage | what it holds |",
        "|---|---|",
    ]
    for name in subpackages(src):
        module = importlib.import_module(f"deeplesion.{name}")
        summary = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""
        lines.append(f"| [deeplesion.{name}]({name}.md) | {summary or SUMMARIES.get(name, '')} |")
    package = importlib.import_module("deeplesion")
    renamed = getattr(package, "_RENAMED", {})
    lines += [
        "",
        "## Top-level names",
        "",
        "`from deeplesion import ...` gives these (loaded on first use):",
        "",
        "| name | defined in |",
        "|---|---|",
    ]
    for name, module in sorted(getattr(package, "_LAZY", {}).items()):
        if name in renamed:
            lines.append(f"| `{name}` | old name of `{renamed[name]}` |")
        else:
            lines.append(f"| [`{name}`][{module}.{name}] | `{module}` |")
    lines.append("")
    for module in TOP_MODULES:
        lines += [f"::: {module}", ""]
    return "\n".join(lines)


def _commands_page() -> str:
    import click

    from deeplesion.cli import main

    root = click.Context(main, info_name="deeplesion", terminal_width=100, max_content_width=100)
    entries: list[tuple[str, click.Command, click.Context]] = []

    def walk(group: click.Group, ctx: click.Context, prefix: str) -> None:
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            sub = click.Context(command, info_name=name, parent=ctx)
            entries.append((f"{prefix} {name}", command, sub))
            if isinstance(command, click.Group):
                walk(command, sub, f"{prefix} {name}")

    walk(main, root, "deeplesion")
    lines = [
        "# Commands",
        "",
        "Every command of the `deeplesion` tool, with the text of its `--help` (this page is",
        "generated from the command definitions, so it lists what the installed version has).",
        "The [guide](guide/getting-data.md) explains what each one is for; `deeplesion",
        "--version` prints the version.",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    for name, command, _ in entries:
        anchor = name.replace(" ", "-")
        lines.append(f"| [`{name}`](#{anchor}) | {command.get_short_help_str(limit=90)} |")
    lines.append("")
    for name, command, ctx in entries:
        anchor = name.replace(" ", "-")
        lines += [f"## {name} {{#{anchor}}}", "", "```text", command.get_help(ctx), "```", ""]
    return "\n".join(lines)


def on_files(files: Files, config) -> Files:
    src = _src(config)
    if str(src) not in sys.path:
        sys.path.insert(0, str(src))
    files.append(File.generated(config, "reference/index.md", content=_index_page(src)))
    for name in subpackages(src):
        files.append(
            File.generated(config, f"reference/{name}.md", content=_reference_page(src, name))
        )
    files.append(File.generated(config, "commands.md", content=_commands_page()))
    changelog = Path(config["config_file_path"]).parent / "CHANGELOG.md"
    files.append(
        File.generated(config, "changelog.md", content=changelog.read_text(encoding="utf-8"))
    )
    return files


# --------------------------------------------------------------------------- error catalogue


def _error_classes(src: Path) -> dict[str, str]:
    """{class name: module} of every class deriving (transitively) from DeepLesionError."""
    import ast

    bases: dict[str, tuple[list[str], str]] = {}
    for path in sorted((src / "deeplesion").rglob("*.py")):
        module = ".".join(path.relative_to(src).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                names = [b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in node.bases]
                bases[node.name] = (names, module)
    found = {"DeepLesionError": bases.get("DeepLesionError", ([], "deeplesion.errors"))[1]}
    changed = True
    while changed:
        changed = False
        for name, (parents, module) in bases.items():
            if name not in found and any(p.split(".")[-1] in found for p in parents):
                found[name] = module
                changed = True
    return found


def _message(node) -> str:
    """The text of a message expression, with ``{...}`` where a value is filled in."""
    import ast

    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            v.value if isinstance(v, ast.Constant) else _placeholder(v.value) for v in node.values
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _message(node.left) + _message(node.right)
    return _placeholder(node)


def _placeholder(node) -> str:
    """``{name}`` for a plain name or attribute, ``{…}`` for anything longer."""
    import ast

    if isinstance(node, (ast.Name, ast.Attribute)):
        return "{" + ast.unparse(node).split(".")[-1] + "}"
    return "{…}"


def error_catalogue(src: Path) -> list[tuple[str, str, str]]:
    """``[(error class, message, module)]`` for every ``raise SomeError("...")`` in the
    package whose class derives from DeepLesionError."""
    import ast

    classes = _error_classes(src)
    rows = set()
    for path in sorted((src / "deeplesion").rglob("*.py")):
        module = ".".join(path.relative_to(src).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            func = node.exc.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name in classes and node.exc.args:
                message = _message(node.exc.args[0])
                if message.replace("{…}", "").strip("{} "):  # not a bare pass-through
                    rows.add((name, message, module))
    return sorted(rows)


def _catalogue_markdown(src: Path) -> str:
    lines = [
        "| error | message (`{…}`: filled in with the actual value) | raised in |",
        "|---|---|---|",
    ]
    for name, message, module in error_catalogue(src):
        text = " ".join(message.split()).replace("|", "\\|").replace("`", "'")
        lines.append(f"| `{name}` | `{text}` | `{module}` |")
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:
    marker = "<!-- error-catalogue -->"
    if marker in markdown:
        markdown = markdown.replace(marker, _catalogue_markdown(_src(config)))
    return markdown


_ROLE = None


def on_page_content(html: str, page, config, files) -> str:
    """Docstrings use Sphinx roles (``:func:`name```); show them as plain code."""
    import re

    global _ROLE
    if _ROLE is None:
        _ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj):(?=<code>)")
    return _ROLE.sub("", html)
