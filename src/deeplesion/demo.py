"""``deeplesion demo``: every pipeline step on a dataset root (the synthetic sample by default).

Each step is a function ``(root, csv_path, out_dir) -> list[Path]`` returning what it wrote.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

from deeplesion.analysis.figures import similar_strip, write_growth, write_rows_csv
from deeplesion.analysis.retrieval import LesionIndex
from deeplesion.convert.nifti import export_nifti
from deeplesion.data.annotations import load_lesions
from deeplesion.data.io import atomic_path, write_text_atomic
from deeplesion.data.paths import IMAGES_DIR
from deeplesion.data.sample import write_sample
from deeplesion.data.stats import dataset_stats
from deeplesion.data.validation import validate
from deeplesion.errors import MissingDataError
from deeplesion.evaluation.errors import EvaluationError
from deeplesion.evaluation.froc import (
    evaluate_detection,
    ground_truth,
    write_predictions_csv,
)
from deeplesion.evaluation.plot import plot_froc
from deeplesion.evaluation.predictions import read_predictions
from deeplesion.evaluation.synthetic import noisy_predictions
from deeplesion.fetch.checksums import md5_of
from deeplesion.fetch.completeness import completeness
from deeplesion.fetch.download import verify
from deeplesion.fetch.extract import extract_all, find_archives
from deeplesion.fetch.manifest import ManifestEntry
from deeplesion.review.batch import render_key_slices
from deeplesion.review.bodymap import write_body_map
from deeplesion.review.gallery import write_gallery
from deeplesion.review.report import write_report
from deeplesion.training.coco import write_coco

Step = Callable[[Path, Path, Path], list[Path]]


def stats_step(root: Path, csv_path: Path, out_dir: Path) -> list[Path]:
    path = out_dir / "stats.json"
    write_text_atomic(path, json.dumps(dataset_stats(load_lesions(csv_path)), indent=2) + "\n")
    return [path]


def validate_step(root: Path, csv_path: Path, out_dir: Path) -> list[Path]:
    report = validate(csv_path, images_root=root)
    lines = [str(p) for p in report.problems]
    lines.append(f"{report.rows} rows: {len(report.fatal)} errors, {len(report.warnings)} warnings")
    path = out_dir / "validation.txt"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return [path]


def extract_step(root: Path, csv_path: Path, out_dir: Path, *, n_series: int = 4) -> list[Path]:
    """Demo step: pack the first ``n_series`` series of ``root`` into two release-style zips
    with a manifest, verify them, extract them into ``out_dir/extracted`` and report how
    complete that copy is against ``csv_path``. Returns the files written."""

    from deeplesion.data.io import write_text_atomic

    root, csv_path, out_dir = Path(root), Path(csv_path), Path(out_dir)
    folders = sorted(p for p in (root / IMAGES_DIR).iterdir() if p.is_dir())[:n_series]
    halves = [folders[: (len(folders) + 1) // 2], folders[(len(folders) + 1) // 2 :]]
    zips_dir = out_dir / "zips"
    zips_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for number, group in enumerate(halves, start=1):
        archive = zips_dir / f"Images_png_{number:02d}.zip"
        with atomic_path(archive) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
            for folder in group:
                for png in sorted(folder.glob("*.png")):
                    zf.write(png, f"{IMAGES_DIR}/{folder.name}/{png.name}")
        entries.append(
            ManifestEntry(archive.name, f"https://example.invalid/{archive.name}", md5_of(archive))
        )
    manifest = zips_dir / "manifest.tsv"
    write_text_atomic(
        manifest, "file\turl\tmd5\n" + "".join(f"{e.file}\t{e.url}\t{e.md5}\n" for e in entries)
    )
    checks = verify(zips_dir, entries)
    copy = out_dir / "extracted"
    report = extract_all(find_archives(zips_dir), copy)
    rerun = extract_all(find_archives(zips_dir), copy)
    shutil.copyfile(csv_path, copy / "DL_info.csv")
    c = completeness(copy, load_lesions(csv_path))
    lines = [f"{check.file}: {check.status} (md5 {check.md5})" for check in checks.checks]
    lines += [
        f"extracted {report.written} files from {len(report.archives)} archives into "
        f"{copy}; {len(report.problems)} problems",
        f"rerun: {rerun.written} written, {rerun.skipped} skipped (size and CRC match)",
        f"series present: {c.series_present} of {c.series_expected} ({c.series_complete} complete)",
        f"slices present: {c.slices_present} of {c.slices_expected}",
        f"key slices present: {c.key_slices_present} of {c.key_slices_expected}",
    ]
    summary = out_dir / "extract.txt"
    write_text_atomic(summary, "\n".join(lines) + "\n")
    return [*(zips_dir / e.file for e in entries), manifest, summary]


def nifti_step(root: Path, csv_path: Path, out_dir: Path) -> list[Path]:
    """Demo step: the dataset's volumes (project layout), manifest and problem report."""
    report = export_nifti(root, out_dir, csv_path=csv_path)
    written = [report.manifest_path, report.problems_path]
    return report.paths + [p for p in written if p is not None]


def evaluation_step(root: Path, csv_path: Path, out_dir: Path) -> list[Path]:
    """Evaluate noisy synthetic predictions on the sample's test split (val if no test).

    Writes ``predictions.csv``, ``evaluation.json`` and ``froc.png`` into ``out_dir``;
    returns the paths written. ``root`` is not needed (boxes only) but kept for a uniform
    demo signature.
    """
    del root
    out_dir = Path(out_dir)
    table = load_lesions(csv_path)
    for split in ("test", "val"):
        try:
            gt = ground_truth(table, split)
            break
        except EvaluationError:
            continue
    else:
        raise EvaluationError(f"{csv_path}: no test or val lesions to evaluate")
    dets = noisy_predictions(gt, seed=0)
    predictions = out_dir / "predictions.csv"
    write_predictions_csv(
        predictions, [gt.file_names[i] for i in dets.image_index], dets.boxes_px1, dets.scores
    )
    result = evaluate_detection(
        gt, read_predictions(predictions, gt, strict=True), by=("type", "size")
    )
    json_path = out_dir / "evaluation.json"
    write_text_atomic(json_path, json.dumps(result.to_json(), indent=2) + "\n")
    plot_path = plot_froc(
        {f"synthetic predictions ({gt.split})": result.curve}, out_dir / "froc.png"
    )
    return [predictions, json_path, plot_path]


def coco_step(root: Path, csv_path: Path, out_dir: Path) -> list[Path]:
    """Demo step: the COCO export of every split of ``csv_path``."""

    lesions = load_lesions(csv_path).lesions
    written = []
    for split in ("train", "val", "test"):
        if any(l.split == split and not l.possibly_noisy for l in lesions):
            path = Path(out_dir) / f"coco_{split}.json"
            write_coco(path, lesions, split)
            written.append(path)
    return written


def analysis_step(root: Path, csv_path: Path, out_dir: Path) -> list[Path]:
    """Growth (table, plots, strips) and a similar-lesion query on a dataset root."""

    out_dir = Path(out_dir)
    table = load_lesions(csv_path)
    written = write_growth(table.lesions, out_dir / "growth", root=root).written
    if len(table.lesions) > 1:
        index = LesionIndex.build(table.lesions, root=root)
        query = table.lesions[0]
        neighbours = index.similar(query, k=min(5, len(table.lesions) - 1))
        rows = [
            {
                "rank": i,
                "row_index": n.lesion.row_index,
                "file_name": n.lesion.file_name,
                "type": n.lesion.type_name,
                "similarity": f"{n.similarity:.4f}",
            }
            for i, n in enumerate(neighbours, start=1)
        ]
        written.append(
            write_rows_csv(
                out_dir / "similar.csv",
                ("rank", "row_index", "file_name", "type", "similarity"),
                rows,
            )
        )
        written.append(similar_strip(root, query, neighbours, out_dir / "similar.png").path)
    return written


def review_step(root: Path, csv_path: Path, out_dir: Path) -> list[Path]:
    """The review outputs for a dataset root: rendered key slices (with lesion crops),
    a gallery, the body map and the HTML report. Returns the paths written."""

    table = load_lesions(csv_path)
    out_dir = Path(out_dir)
    rendered = render_key_slices(root, table, out_dir / "key_slices", crops=True, overwrite=True)
    written = rendered.written + rendered.crops_written
    write_gallery(out_dir / "gallery.png", root, table, per_type=4, context_slices=3)
    written.append(out_dir / "gallery.png")
    written.append(write_body_map(out_dir / "bodymap.png", table, root=root))
    written.append(write_report(csv_path, out_dir, root=root))
    return written


def steps() -> list[tuple[str, Step]]:
    """The demo's steps, in order."""
    return [
        ("validate", validate_step),
        ("stats", stats_step),
        ("extract", extract_step),
        ("nifti", nifti_step),
        ("evaluation", evaluation_step),
        ("coco", coco_step),
        ("analysis", analysis_step),
        ("review", review_step),
    ]


def run_demo(
    out_dir: str | Path,
    *,
    root: str | Path | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[Path]]:
    """Run every step; returns {step name: paths written}.

    Without ``root`` the synthetic sample is generated (or reused) under ``out_dir/sample``.
    ``progress`` is called with each step's name before it runs.
    """
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
        raise MissingDataError(
            f"{root}: no DL_info.csv in this folder (a dataset root holds "
            "DL_info.csv and Images_png/)"
        )
    for name, step in steps():
        if progress:
            progress(name)
        step_dir = out_dir / name
        step_dir.mkdir(parents=True, exist_ok=True)
        written[name] = step(root, csv_path, step_dir)
    return written
