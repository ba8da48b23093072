"""``deeplesion demo``: every pipeline step on a dataset root (the synthetic sample by default).

Each step is a function ``(root, csv_path, out_dir) -> list[Path]`` returning what it wrote.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path

from .annotations import load_lesions
from .errors import MissingDataError
from .io import write_text_atomic
from .stats import dataset_stats
from .validation import validate

Step = Callable[[Path, Path, Path], list[Path]]


def _stats_step(root: Path, csv_path: Path, out_dir: Path) -> list[Path]:
    path = out_dir / "stats.json"
    write_text_atomic(path, json.dumps(dataset_stats(load_lesions(csv_path)), indent=2) + "\n")
    return [path]


def _validate_step(root: Path, csv_path: Path, out_dir: Path) -> list[Path]:
    report = validate(csv_path, images_root=root)
    lines = [str(p) for p in report.problems]
    lines.append(f"{report.rows} rows: {len(report.fatal)} errors, "
                 f"{len(report.warnings)} warnings")
    path = out_dir / "validation.txt"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return [path]


#: Steps of feature modules, as "module:function", imported only when the demo runs.
_FEATURE_STEPS = [
    ("extract", "deeplesion.extract:demo"),
    ("nifti", "deeplesion.nifti:demo"),
    ("evaluation", "deeplesion.evaluation:demo"),
    ("coco", "deeplesion.coco:demo"),
    ("analysis", "deeplesion.analysis:demo"),
    ("review", "deeplesion.report:demo"),
]


def _load(target: str) -> Step:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def steps() -> list[tuple[str, Step]]:
    """The demo's steps, in order."""
    return [("validate", _validate_step), ("stats", _stats_step)] + [
        (name, _load(target)) for name, target in _FEATURE_STEPS]


def run_demo(out_dir: str | Path, *, root: str | Path | None = None, seed: int = 0,
             progress: Callable[[str], None] | None = None) -> dict[str, list[Path]]:
    """Run every step; returns {step name: paths written}.

    Without ``root`` the synthetic sample is generated (or reused) under ``out_dir/sample``.
    ``progress`` is called with each step's name before it runs.
    """
    from .sample import write_sample

    out_dir = Path(out_dir)
    written: dict[str, list[Path]] = {}
    if root is None:
        root = out_dir / "sample"
        if not (root / "DL_info.csv").is_file():
            if progress:
                progress("sample")
            write_sample(root, seed)
        written["sample"] = [root]
    root = Path(root)
    csv_path = root / "DL_info.csv"
    if not csv_path.is_file():
        raise MissingDataError(f"{root}: no DL_info.csv in this folder (a dataset root holds "
                               "DL_info.csv and Images_png/)")
    for name, step in steps():
        if progress:
            progress(name)
        step_dir = out_dir / name
        step_dir.mkdir(parents=True, exist_ok=True)
        written[name] = step(root, csv_path, step_dir)
    return written
