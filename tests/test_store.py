"""The training store (deeplesion.convert.store, deeplesion.data.store): values, layout,
selection, resumability, parallel builds, verification and the CLI.

Oracles: Pillow's PNG values minus 32768 in int32, ``numpy.save`` for the file bytes,
``scipy.ndimage.binary_opening`` for the body box, plain Python sets for the selection.
"""

from __future__ import annotations

import csv
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from scipy import ndimage

from deeplesion.cli import main
from deeplesion.convert.store import StoreBuildError, build_store, select_runs, verify_store
from deeplesion.data.annotations import Lesion, load_lesions, write_dl_info
from deeplesion.data.sources import PngSource
from deeplesion.data.store import (
    BOX_COLUMNS,
    INDEX_COLUMNS,
    StoreError,
    StoreSource,
    body_box,
    open_store,
)
from deeplesion.data.volumes import index_volumes

REPO = Path(__file__).resolve().parents[1]
FOLDER = "000062_01_01"


def png_hu(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(np.int32) - 32768


def scipy_box(raw: np.ndarray, threshold: int = 32000, size: int = 7):
    mask = ndimage.binary_opening(raw > threshold, structure=np.ones((size, size), bool))
    if not mask.any():
        return None
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def lesion(key: int, interval: float, row: int, split: int = 1, short_mm: float = 12.0) -> Lesion:
    """A DL_info row on the real 29-slice block (its own row is not public); consistent
    (end points, diameters and box agree), so loading keeps it."""
    short_px = short_mm / 0.7
    x1, x2, cy = 200.0 + row, 240.0 + row, 246.0
    y1, y2 = cy - short_px / 2 - 5, cy + short_px / 2 + 5
    cx = (x1 + x2) / 2
    return Lesion(
        row,
        f"{FOLDER}_{key:03d}.png",
        62,
        1,
        1,
        key,
        (x1 + 5, cy, x2 - 5, cy, cx, cy - short_px / 2, cx, cy + short_px / 2),
        (x1, y1, x2, y2),
        (30.0, short_px),
        (0.5, 0.5, 0.5),
        -1,
        False,
        (56, 84),
        (0.7, 0.7, interval),
        (512, 512),
        (-175.0, 275.0),
        "F",
        50.0,
        split,
    )


REAL_KEYS = [(57, 1.0), (62, 2.5), (70, 5.0), (77, 2.0), (83, 0.0)]


@pytest.fixture(scope="module")
def real_root(real_series_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real") / "root"
    (root / "Images_png").mkdir(parents=True)
    (root / "Images_png" / FOLDER).symlink_to(real_series_dir)
    rows = [lesion(k, z, i, short_mm=4.0 + 4 * i) for i, (k, z) in enumerate(REAL_KEYS)]
    write_dl_info(rows, root / "DL_info.csv")
    return root


@pytest.fixture(scope="module")
def real_store(real_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("real-store") / "store"
    build_store(real_root, out)
    return out


def snapshot(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` (relative path -> bytes)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sample_store(sample_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample-store") / "store"
    build_store(sample_root, out)
    return out


# --------------------------------------------------------------------------- values


def test_real_block_is_stored_bit_exact_and_readable_without_deeplesion(
    real_root, real_store, real_series_dir
):
    with open(real_store / "index.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == INDEX_COLUMNS
    assert rows == [
        {
            "volume": f"{FOLDER}_056-084",
            "path": f"volumes/000062/{FOLDER}_056-084.npy",
            "first_slice": "56",
            "last_slice": "84",
            "rows": "512",
            "cols": "512",
            "spacing_x": "0.7",
            "spacing_y": "0.7",
            "spacing_z": "1.0",  # the folder's first row (rows disagree: reported)
        }
    ]
    array = np.load(real_store / rows[0]["path"], mmap_mode="r")
    assert array.dtype == np.int16 and array.shape == (29, 512, 512)
    pngs = sorted(real_series_dir.glob("*.png"))
    for k, png in enumerate(pngs):
        assert np.array_equal(array[k].astype(np.int32), png_hu(png)), png.name
    # the file is exactly what numpy.save writes for that array
    buf = __import__("io").BytesIO()
    np.save(buf, np.stack([png_hu(p) for p in pngs]).astype("<i2"))
    assert (real_store / rows[0]["path"]).read_bytes() == buf.getvalue()


def test_zarr_format_holds_the_same_values(real_root, real_series_dir, tmp_path):
    zarr = pytest.importorskip("zarr")
    report = build_store(real_root, tmp_path / "z", fmt="zarr")
    array = zarr.open_array(tmp_path / "z" / report.entries[0].path, mode="r")
    assert array.shape == (29, 512, 512) and array.chunks == (1, 512, 512)
    want = np.stack([png_hu(p) for p in sorted(real_series_dir.glob("*.png"))])
    assert np.array_equal(array[...].astype(np.int32), want)
    assert report.size_bytes < report.png_bytes  # compressed below the PNGs
    assert verify_store(real_root, tmp_path / "z").ok
    # also through the generic opener, and a rerun keeps the finished array
    assert np.array_equal(zarr.open(tmp_path / "z" / report.entries[0].path, mode="r")[5], array[5])
    before = snapshot(tmp_path / "z")
    again = build_store(real_root, tmp_path / "z", fmt="zarr")
    assert again.written == 0 and again.skipped == 1 and snapshot(tmp_path / "z") == before
    with pytest.raises(StoreBuildError, match="other settings"):
        build_store(real_root, tmp_path / "z", fmt="npy")


def test_body_box_equals_scipy_opening():
    rng = np.random.default_rng(5)
    for size in range(1, 10):
        for _ in range(20):
            mask = rng.random((41, 53)) > rng.uniform(0.2, 0.9)
            mask = ndimage.binary_dilation(mask, iterations=int(rng.integers(0, 3)))
            raw = np.where(mask, 33000, 31000).astype(np.uint16)
            assert body_box(raw, 32000, size) == scipy_box(raw, 32000, size), size
    assert body_box(np.full((20, 20), 100, np.uint16)) is None


def test_stored_boxes_are_the_slices_body_boxes(real_store, real_series_dir):
    with open(real_store / "boxes.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == BOX_COLUMNS and len(rows) == 29
    source = open_store(real_store)
    for row in rows:
        n = int(row["slice_number"])
        want = scipy_box(np.asarray(Image.open(real_series_dir / f"{n:03d}.png")))
        assert tuple(int(row[c]) for c in ["x0", "y0", "x1", "y1"]) == want
        assert source.body_box_px0(FOLDER, n, 32000, 7) == want
    assert source.body_box_px0(FOLDER, 60, 32001, 7) is None  # other parameters
    assert source.body_box_px0(FOLDER, 60, 32000, 5) is None
    assert source.body_box_px0(FOLDER, 85, 32000, 7) is None  # not stored


def test_store_source_reads_what_the_png_source_reads(real_root, real_store):
    store, png = open_store(real_store), PngSource(real_root)
    for n in (55, 56, 70, 84, 85):
        assert store.has_slice(FOLDER, n) == png.has_slice(FOLDER, n)
    for n in (56, 71, 84):
        a, b = store.read_raw(FOLDER, n), png.read_raw(FOLDER, n)
        assert a.dtype == np.uint16 and np.array_equal(a, b)
        assert np.array_equal(store.read_hu(FOLDER, n).astype(np.int32), b.astype(np.int32) - 32768)
    with pytest.raises(OSError, match="not stored"):
        store.read_raw(FOLDER, 85)
    store.read_raw(FOLDER, 60)
    copy = pickle.loads(pickle.dumps(store))
    assert len(pickle.dumps(store)) < 100_000  # no array data travels to workers
    assert np.array_equal(copy.read_raw(FOLDER, 60), png.read_raw(FOLDER, 60))
    with pytest.raises(StoreError, match="not a store"):
        StoreSource(real_root)


# --------------------------------------------------------------------------- selection


def _on_disk(root: Path) -> dict[str, set[int]]:
    return {d.name: {int(p.stem) for p in d.glob("*.png")} for d in (root / "Images_png").iterdir()}


def _stored(entries) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for e in entries:
        out.setdefault(e.folder, set()).update(range(e.first_slice, e.last_slice + 1))
    return out


@pytest.mark.parametrize(
    "kwargs", [{}, {"context_mm": 6.0}, {"whole_series": True}, {"splits": ["val", "test"]}]
)
def test_selection_follows_the_rule(sample_root, kwargs):
    table = load_lesions(sample_root / "DL_info.csv")
    disk = _on_disk(sample_root)
    lesions = [
        l for l in table.lesions if l.split in kwargs.get("splits", ["train", "val", "test"])
    ]
    want: dict[str, set[int]] = {}
    for l in lesions:
        numbers = want.setdefault(l.series_folder, set())
        if kwargs.get("whole_series"):
            numbers |= disk[l.series_folder]
        elif "context_mm" in kwargs:
            z = l.slice_interval_mm
            numbers |= {n for n in disk[l.series_folder] if abs(n - l.key_slice_index) * z <= 6.0}
        else:
            lo, hi = l.slice_range
            numbers |= {n for n in disk[l.series_folder] if lo <= n <= hi}
    index = index_volumes(sample_root)
    runs = select_runs(
        index,
        lesions,
        context_mm=kwargs.get("context_mm"),
        whole_series=kwargs.get("whole_series", False),
    )
    assert _stored(runs) == {k: v for k, v in want.items() if v}
    for run in runs:  # runs are maximal: no two touch
        assert not any(o.folder == run.folder and o.first_slice == run.last_slice + 1 for o in runs)
    if kwargs.get("context_mm"):
        assert sum(r.n_slices for r in runs) < index.n_slices


# --------------------------------------------------------------------------- resumability


def test_rerun_keeps_complete_arrays(sample_root, sample_store, tmp_path):
    out = tmp_path / "out"
    first = build_store(sample_root, out)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")}
    again = build_store(sample_root, out)
    assert again.written == 0 and again.skipped == len(first.runs) == len(stamps)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")} == stamps
    assert snapshot(out) == snapshot(sample_store)
    # a truncated array is written again; a lost box table is recomputed from the arrays
    victim = sorted(out.rglob("*.npy"))[2]
    victim.write_bytes(victim.read_bytes()[:-1000])
    (out / "boxes.csv").unlink()
    report = build_store(sample_root, out)
    assert report.written == 1
    assert snapshot(out) == snapshot(sample_store)


def test_killed_build_restarts_to_identical_bytes(sample_root, sample_store, tmp_path):
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, signal
        import deeplesion.data.slices as slices
        import deeplesion.convert.store as store
        real, calls = slices.read_png_raw, [0]
        def dying(path):
            calls[0] += 1
            if calls[0] == 60:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(path)
        slices.read_png_raw = dying
        store.build_store({str(sample_root)!r}, {str(out)!r})
    """)
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    left = snapshot(out)
    assert "index.csv" not in left
    assert any(name.endswith(".incomplete") for name in left)  # killed mid-array
    reference = snapshot(sample_store)
    complete = [n for n in left if n.endswith(".npy")]
    assert complete and all(left[n] == reference[n] for n in complete)
    report = build_store(sample_root, out)
    assert report.skipped == len(complete)
    assert snapshot(out) == reference


def test_unreadable_slice_splits_the_run(sample_root, tmp_path):
    root = tmp_path / "root"
    for folder in ("000005_01_01", "000004_01_02"):
        (root / "Images_png" / folder).mkdir(parents=True)
        for png in (sample_root / "Images_png" / folder).iterdir():
            (root / "Images_png" / folder / png.name).symlink_to(png)
    table = load_lesions(sample_root / "DL_info.csv")
    keep = [l for l in table.lesions if l.series_folder == "000005_01_01"]
    missing = [l for l in table.lesions if l.series_folder == "000006_01_01"]
    write_dl_info(keep + missing, root / "DL_info.csv")
    bad = root / "Images_png/000005_01_01/010.png"
    bad.unlink()
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    report = build_store(root, tmp_path / "out")
    assert [e.volume for e in report.entries] == ["000005_01_01_002-009", "000005_01_01_011-014"]
    assert [(p.folder, p.slice_number) for p in report.unreadable] == [("000005_01_01", 10)]
    assert report.missing_series == ["000006_01_01"]
    with open(report.problems_path, newline="") as fh:
        kinds = {(r["kind"], r["folder"]) for r in csv.DictReader(fh)}
    assert ("unreadable-slice", "000005_01_01") in kinds
    assert ("row-without-image", "000006_01_01") in kinds
    source = open_store(tmp_path / "out")
    assert not source.has_slice("000005_01_01", 10) and source.has_slice("000005_01_01", 11)
    result = CliRunner().invoke(main, ["store", str(root), str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert "unreadable-slice: 000005_01_01 slice 10" in result.output
    assert result.output.count("missing") == 1 and "1 series folders" in result.output


# --------------------------------------------------------------------------- parallel


def test_workers_shards_and_dask_give_the_same_bytes(sample_root, sample_store, tmp_path):
    reference = snapshot(sample_store)
    build_store(sample_root, tmp_path / "w2", workers=2)
    assert snapshot(tmp_path / "w2") == reference
    out = tmp_path / "shards"
    entries = []
    for i in (1, 2, 3):
        report = build_store(sample_root, out, shard=f"{i}/3")
        assert report.index_path.name == f"index.shard-{i}-of-3.csv"
        entries += report.entries
    assert sorted(e.volume for e in entries) == sorted(
        e.volume for e in open_store(sample_store).entries
    )
    arrays = {k: v for k, v in reference.items() if k.startswith("volumes/")}
    assert {k: v for k, v in snapshot(out).items() if k.startswith("volumes/")} == arrays
    assert open_store(out).entries == open_store(sample_store).entries  # union of shards
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        build_store(sample_root, tmp_path / "dask", scheduler=cluster.scheduler_address)
    assert snapshot(tmp_path / "dask") == reference


# --------------------------------------------------------------------------- verify, CLI


def test_verify_finds_a_changed_value(sample_root, sample_store, tmp_path):
    out = tmp_path / "out"
    for name, data in snapshot(sample_store).items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    assert verify_store(sample_root, out).ok
    victim = sorted(out.rglob("*.npy"))[0]
    data = bytearray(victim.read_bytes())
    data[-2] ^= 0x01  # one value of the last slice
    victim.write_bytes(bytes(data))
    report = verify_store(sample_root, out)
    assert len(report.mismatches) == 1 and "stored values differ" in report.mismatches[0]
    result = CliRunner().invoke(main, ["store", str(sample_root), str(out), "--verify"])
    assert result.exit_code == 1 and "1 of" in result.output and "differ" in result.output


def test_cli_store(sample_root, sample_store, tmp_path):
    runner = CliRunner()
    out = tmp_path / "out"
    result = runner.invoke(main, ["store", str(sample_root), str(out), "--verify"])
    assert result.exit_code == 0, result.output
    n = len(open_store(sample_store).entries)
    assert f"{n} arrays" in result.output and "of PNGs" in result.output
    assert "verified" in result.output and "problems: gap" in result.output
    assert snapshot(out) == snapshot(sample_store)
    result = runner.invoke(
        main, ["store", str(sample_root), str(out), "--context-mm", "5", "--whole-series"]
    )
    assert result.exit_code == 2 and "not both" in result.output
    result = runner.invoke(main, ["store", str(sample_root), str(out), "--shard", "4/3"])
    assert result.exit_code == 2 and "--shard" in result.output
    result = runner.invoke(
        main, ["store", str(sample_root), str(out), "--split", "val", "--format", "zarr"]
    )
    assert result.exit_code == 1 and "other settings" in result.output
    assert os.listdir(out)  # nothing removed


def test_missing_annotations_and_extras_are_clean_errors(sample_root, tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "Images_png").mkdir(parents=True)
    result = CliRunner().invoke(main, ["store", str(root), str(tmp_path / "out")])
    assert result.exit_code == 1 and "no DL_info.csv" in result.output and "--csv" in result.output
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "zarr" else real(name, *a)
    )
    with pytest.raises(StoreBuildError, match=r"deeplesion\[store\]"):
        build_store(sample_root, tmp_path / "z", fmt="zarr")
    assert not (tmp_path / "z").exists()
