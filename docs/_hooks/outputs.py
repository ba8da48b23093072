"""MkDocs hook: run the tutorials and figure scripts, turn each tutorial into a page.

``docs/tutorials/NAME.py`` is a plain Python script in "percent" cells: ``# %% [markdown]``
cells hold the prose (each line starts with ``#``), ``# %%`` cells hold code. Each script is
run as ``python NAME.py OUT_DIR``; the page ``tutorials/NAME.md`` is made from its cells,
and a markdown line ``<!-- output: FILE -->`` is replaced by ``OUT_DIR/FILE``: a ``.md``
fragment inline, a ``.txt`` file as a code block, a picture as an image.
``docs/figures/NAME.py`` scripts are run the same way; only their pictures are published.

Set ``DEEPLESION_DOCS_OUTPUTS`` to a folder that already holds ``tutorials/NAME/`` and
``figures/NAME/`` (the test suite does, after running the scripts once) to skip the runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

RUN_DIRS = ("tutorials", "figures")
PUBLISHED = {".png", ".svg", ".csv", ".json", ".txt"}
_outputs: Path | None = None


def scripts(docs_dir: Path, kind: str) -> list[Path]:
    return sorted(p for p in (docs_dir / kind).glob("*.py") if not p.name.startswith("_"))


def run_script(script: Path, out_dir: Path, repo: Path) -> None:
    """Run one script into ``out_dir``; a failure stops the build with its output."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(repo / "src"), env.get("PYTHONPATH", "")) if p
    )
    env.setdefault("MPLBACKEND", "Agg")
    done = subprocess.run(
        [sys.executable, str(script), str(out_dir)],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise PluginError(f"{script.name} failed (exit {done.returncode}):\n{tail}")


def cells(source: str) -> list[tuple[str, str]]:
    """``[(kind, text)]`` of a percent-format script; kind is 'markdown' or 'code'."""
    out: list[tuple[str, list[str]]] = []
    for line in source.splitlines():
        if line.startswith("# %%"):
            out.append(("markdown" if "[markdown]" in line else "code", []))
        elif out:
            out[-1][1].append(line)
    result = []
    for kind, lines in out:
        if kind == "markdown":
            text = "\n".join(
                line[2:] if line.startswith("# ") else line.lstrip("#") for line in lines
            )
        else:
            text = "\n".join(lines)
        text = text.strip("\n")
        if text.strip():
            result.append((kind, text))
    return result


def expand_outputs(markdown: str, out_dir: Path, link_prefix: str, where: str) -> str:
    """Replace ``<!-- output: FILE -->`` lines by the file's content or picture."""
    lines = []
    for line in markdown.splitlines():
        stripped = line.strip()
        if stripped.startswith("<!-- output:") and stripped.endswith("-->"):
            name = stripped[len("<!-- output:") : -len("-->")].strip()
            path = out_dir / name
            if not path.is_file():
                raise PluginError(f"{where}: output {name!r} was not written by the script")
            if path.suffix == ".md":
                lines.append(path.read_text(encoding="utf-8").rstrip("\n"))
            elif path.suffix == ".txt":
                lines += ["```text", path.read_text(encoding="utf-8").rstrip("\n"), "```"]
            else:
                lines.append(f"![{path.stem.replace('_', ' ')}]({link_prefix}{name})")
        else:
            lines.append(line)
    return "\n".join(lines)


def tutorial_page(script: Path, out_dir: Path) -> str:
    parts = []
    for kind, text in cells(script.read_text(encoding="utf-8")):
        if kind == "markdown":
            parts.append(expand_outputs(text, out_dir, f"{script.stem}/", script.name))
        else:
            parts.append(f"```python\n{text}\n```")
    parts.append(
        f"*The whole script: [`{script.name}`]({script.name}); it runs in the test suite, "
        "which is where the outputs shown on this page come from.*"
    )
    return "\n\n".join(parts) + "\n"


def on_files(files: Files, config) -> Files:
    global _outputs
    docs_dir = Path(config["docs_dir"])
    repo = Path(config["config_file_path"]).parent
    given = os.environ.get("DEEPLESION_DOCS_OUTPUTS")
    _outputs = Path(given) if given else Path(tempfile.mkdtemp(prefix="deeplesion-docs-"))
    for kind in RUN_DIRS:
        for script in scripts(docs_dir, kind):
            out_dir = _outputs / kind / script.stem
            if not given:
                run_script(script, out_dir, repo)
            if not out_dir.is_dir():
                raise PluginError(f"no outputs of {kind}/{script.name} in {out_dir}")
            for path in sorted(out_dir.iterdir()):
                if path.is_file() and path.suffix in PUBLISHED:
                    rel = path.relative_to(out_dir).as_posix()
                    files.append(
                        File.generated(
                            config, f"{kind}/{script.stem}/{rel}", abs_src_path=str(path)
                        )
                    )
            if kind == "tutorials":
                page = tutorial_page(script, out_dir)
                files.append(File.generated(config, f"tutorials/{script.stem}.md", content=page))
    return files
