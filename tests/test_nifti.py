"""NIfTI export (deeplesion.convert.nifti): values, orientation, resumability, parallel runs."""

from __future__ import annotations

import csv
import gzip
import hashlib
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from deeplesion.cli import main
from deeplesion.convert.nifti import (
    DESCRIP,
    NiftiExportError,
    check_volume,
    export_nifti,
    parse_shard,
    read_manifest,
)
from deeplesion.data.annotations import load_lesions, write_dl_info
from deeplesion.data.volumes import SubVolume, index_volumes
from deeplesion.demo import nifti_step as demo

REPO = Path(__file__).resolve().parents[1]
MINI_FOLDERS = ["000001_01_01", "000004_01_02", "000005_01_01", "000008_01_01"]
SPACING = (0.7, 0.8, 2.5)  # x != y on purpose: a swapped axis shows


def _png_hu(path: Path) -> np.ndarray:
    """Independent reference: Pillow -> int32 -> minus 32768 (the README's rule)."""
    return np.asarray(Image.open(path)).astype(np.int32) - 32768


def _mirror(src: Path, dst: Path, folders: list[str]) -> Path:
    for folder in folders:
        (dst / "Images_png" / folder).mkdir(parents=True)
        for png in (src / "Images_png" / folder).iterdir():
            (dst / "Images_png" / folder / png.name).symlink_to(png)
    write_dl_info(
        [l for l in load_lesions(src / "DL_info.csv").lesions if l.series_folder in folders],
        dst / "DL_info.csv",
    )
    return dst


def _snapshot(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` (hidden ones too) -> its bytes."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


@pytest.fixture(scope="module")
def mini_root(sample_root, tmp_path_factory) -> Path:
    return _mirror(sample_root, tmp_path_factory.mktemp("mini") / "root", MINI_FOLDERS)


@pytest.fixture(scope="module")
def reference(mini_root, tmp_path_factory) -> dict[str, bytes]:
    """An uninterrupted serial export of the mini root."""
    out = tmp_path_factory.mktemp("reference") / "out"
    export_nifti(mini_root, out)
    return _snapshot(out)


@pytest.fixture()
def real_root(real_series_dir, tmp_path) -> Path:
    root = tmp_path / "real"
    (root / "Images_png").mkdir(parents=True)
    (root / "Images_png" / "000062_01_01").symlink_to(real_series_dir)
    return root


# --------------------------------------------------------------------------- values


def test_real_series_is_one_volume_with_exact_hu_and_spacing(real_root, real_series_dir, tmp_path):
    report = export_nifti(real_root, tmp_path / "out", default_spacing_mm=SPACING)
    assert [v.file for v in report.volumes] == ["000062_01_01_056-084.nii.gz"]
    path = report.paths[0]
    expected = np.stack(
        [_png_hu(real_series_dir / f"{n:03d}.png").T for n in range(56, 85)], axis=-1
    )  # [x - 1, y - 1, k]

    img = nib.load(path)
    data = np.asanyarray(img.dataobj)
    assert img.get_data_dtype() == np.int16 and data.dtype == np.int16
    assert data.shape == (512, 512, 29)
    assert np.array_equal(data, expected)
    sx, sy, sz = SPACING
    assert img.header.get_zooms() == pytest.approx(SPACING)
    affine = np.array([[-sx, 0, 0, 0], [0, -sy, 0, 0], [0, 0, -sz, -55 * sz], [0, 0, 0, 1]])
    np.testing.assert_allclose(img.header.get_qform(), affine, atol=1e-5)
    np.testing.assert_allclose(img.header.get_sform(), affine, atol=1e-5)
    assert int(img.header["qform_code"]) > 0 and int(img.header["sform_code"]) > 0
    assert img.header.get_xyzt_units()[0] == "mm"
    assert nib.aff2axcodes(img.affine) == ("L", "P", "I")
    assert img.header["descrip"].item().decode() == DESCRIP["project"]

    sitk = pytest.importorskip("SimpleITK")
    image = sitk.ReadImage(str(path))
    assert image.GetPixelID() == sitk.sitkInt16
    assert image.GetSpacing() == pytest.approx(SPACING, abs=1e-6)
    assert np.array_equal(sitk.GetArrayFromImage(image).transpose(2, 1, 0), expected)
    for ijk in [(0, 0, 0), (10, 300, 5), (511, 2, 28)]:
        ras = img.affine @ np.array([*ijk, 1.0])
        lps = (-ras[0], -ras[1], ras[2])  # ITK works in LPS
        assert image.TransformIndexToPhysicalPoint(ijk) == pytest.approx(lps, abs=1e-4)


def test_spacing_comes_from_the_dl_info_row(real_root, sample_root, tmp_path):
    template = load_lesions(sample_root / "DL_info.csv").lesions[0]
    row = replace(
        template,
        file_name="000062_01_01_070.png",
        patient_index=62,
        study_index=1,
        series_id=1,
        key_slice_index=70,
        slice_range=(56, 84),
        spacing_mm=(0.6, 0.6, 1.25),
        image_size=(512, 512),
    )
    write_dl_info([row], real_root / "DL_info.csv")
    report = export_nifti(real_root, tmp_path / "out")
    assert not report.problems
    assert nib.load(report.paths[0]).header.get_zooms() == pytest.approx((0.6, 0.6, 1.25))
    assert report.volumes[0].key_slices == (70,)


def test_official_layout(real_root, real_series_dir, tmp_path):
    official = export_nifti(
        real_root, tmp_path / "o", default_spacing_mm=SPACING, layout="official"
    )
    img = nib.load(official.paths[0])
    data = np.asanyarray(img.dataobj)
    assert data.dtype == np.int16 and data.shape == (512, 512, 29)
    for k in (0, 17, 28):
        assert np.array_equal(data[:, :, k], _png_hu(real_series_dir / f"{56 + k:03d}.png"))
    sx, sy, sz = SPACING
    np.testing.assert_allclose(
        img.affine, [[0, -sy, 0, 0], [-sx, 0, 0, 0], [0, 0, -sz, 0], [0, 0, 0, 1]], atol=1e-5
    )
    # with square pixels (every DeepLesion series) both layouts put the same pixels in the
    # same directions (origins differ); the official affine scales columns by y spacing
    square = (0.7, 0.7, 2.5)
    p_aff = nib.load(
        export_nifti(real_root, tmp_path / "ps", default_spacing_mm=square).paths[0]
    ).affine
    o_aff = nib.load(
        export_nifti(
            real_root, tmp_path / "os", default_spacing_mm=square, layout="official"
        ).paths[0]
    ).affine
    for x, y, k in [(1, 1, 0), (400, 30, 7)]:
        p = p_aff @ [x - 1, y - 1, k, 1] - p_aff @ [0, 0, 0, 1]
        o = o_aff @ [y - 1, x - 1, k, 1] - o_aff @ [0, 0, 0, 1]
        np.testing.assert_allclose(p, o, atol=1e-4)


def test_folder_without_rows_needs_a_spacing(real_root, tmp_path):
    report = export_nifti(real_root, tmp_path / "out")
    assert report.volumes == [] and [v.name for v in report.not_exported] == [
        "000062_01_01_056-084"
    ]
    assert [p.kind for p in report.problems] == ["folder-without-rows"]
    assert not list((tmp_path / "out").glob("*.nii.gz"))


# --------------------------------------------------------------------------- runs, manifest


def test_gaps_make_separate_volumes_and_manifest_is_true(mini_root, reference, tmp_path):
    expected = sorted(
        f"{l.series_folder}_{l.slice_range[0]:03d}-{l.slice_range[1]:03d}.nii.gz"
        for l in load_lesions(mini_root / "DL_info.csv").lesions
    )
    names = sorted(n for n in reference if n.endswith(".nii.gz"))
    assert names == sorted(set(expected))
    assert "000001_01_01_004-016.nii.gz" in names and "000001_01_01_026-038.nii.gz" in names
    out = tmp_path / "out"
    out.mkdir()
    for name, data in reference.items():
        (out / name).write_bytes(data)
    rows = read_manifest(out / "manifest.csv")
    assert [r["file"] for r in rows] == names
    for r in rows:
        assert r["sha256"] == hashlib.sha256(reference[r["file"]]).hexdigest()
        assert int(r["size_bytes"]) == len(reference[r["file"]])
        img = nib.load(out / r["file"])
        assert "x".join(map(str, img.shape)) == r["shape"]
        spacing = tuple(float(v) for v in r["spacing_mm"].split(","))
        assert img.header.get_zooms() == pytest.approx(spacing)
        assert img.shape[2] == int(r["last_slice"]) - int(r["first_slice"]) + 1


def test_gzip_stream_is_deterministic(reference):
    for name, data in reference.items():
        if name.endswith(".nii.gz"):
            assert data[:3] == b"\x1f\x8b\x08"
            assert data[3] & 0x08 == 0  # no file name stored
            assert data[4:8] == b"\0\0\0\0"  # mtime 0


def test_rerun_skips_complete_volumes(mini_root, reference, tmp_path):
    out = tmp_path / "out"
    export_nifti(mini_root, out)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")}
    again = export_nifti(mini_root, out)
    assert again.written == 0 and again.skipped == len(stamps)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")} == stamps
    assert _snapshot(out) == reference


def test_killed_run_restarts_to_identical_output(mini_root, reference, tmp_path):
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, signal
        import deeplesion.data.slices as slices
        import deeplesion.convert.nifti as nifti
        real, calls = slices.read_png_raw, [0]
        def dying(path):
            calls[0] += 1
            if calls[0] == 20:  # in the middle of the second volume
                os.kill(os.getpid(), signal.SIGKILL)
            return real(path)
        slices.read_png_raw = dying
        nifti.export_nifti({str(mini_root)!r}, {str(out)!r})
    """)
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    left = sorted(p.name for p in out.iterdir())
    assert "manifest.csv" not in left
    assert any(n.endswith(".incomplete") for n in left)  # killed mid-write
    complete = [n for n in left if n.endswith(".nii.gz")]
    assert complete and all(reference[n] == (out / n).read_bytes() for n in complete)
    report = export_nifti(mini_root, out)
    assert report.skipped == len(complete)
    assert _snapshot(out) == reference


def test_failure_midway_then_restart(mini_root, reference, tmp_path):
    out = tmp_path / "out"
    calls = []

    def failing(done, total):
        calls.append(done)
        if len(calls) == 3:
            raise RuntimeError("injected")

    with pytest.raises(RuntimeError, match="injected"):
        export_nifti(mini_root, out, progress=failing)
    assert not (out / "manifest.csv").exists()
    export_nifti(mini_root, out)
    assert _snapshot(out) == reference


def test_damaged_volumes_are_rewritten(mini_root, reference, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name, data in reference.items():
        (out / name).write_bytes(data)
    names = sorted(n for n in reference if n.endswith(".nii.gz"))
    flipped = bytearray(reference[names[0]])
    flipped[len(flipped) // 2] ^= 0xFF  # same size, wrong checksum
    (out / names[0]).write_bytes(bytes(flipped))
    (out / names[1]).write_bytes(reference[names[1]][:-1000])  # truncated
    report = export_nifti(mini_root, out)
    assert report.written == 2
    assert _snapshot(out) == reference
    # without a manifest, the truncated file is still caught by its gzip trailer
    (out / "manifest.csv").unlink()
    (out / names[1]).write_bytes(reference[names[1]][:-1000])
    sub = index_volumes(mini_root).find("000001_01_01", 26)
    assert check_volume(out / names[1], sub, "project") is None
    export_nifti(mini_root, out)
    assert _snapshot(out) == reference


def test_unreadable_slice_splits_the_run_and_is_reported(sample_root, tmp_path):
    root = _mirror(sample_root, tmp_path / "root", ["000005_01_01"])
    bad = root / "Images_png/000005_01_01/010.png"
    bad.unlink()
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    out = tmp_path / "out"
    report = export_nifti(root, out)
    assert [v.file for v in report.volumes] == [
        "000005_01_01_002-009.nii.gz",
        "000005_01_01_011-014.nii.gz",
    ]
    assert [(p.folder, p.slice_number) for p in report.unreadable] == [("000005_01_01", 10)]
    with open(report.problems_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["kind"], r["slice_number"]) for r in rows] == [("unreadable-slice", "10")]
    data = np.asanyarray(nib.load(out / "000005_01_01_011-014.nii.gz").dataobj)
    assert np.array_equal(data[:, :, 0], _png_hu(root / "Images_png/000005_01_01/011.png").T)
    first = _snapshot(out)
    assert export_nifti(root, out).written == 0
    assert _snapshot(out) == first


# --------------------------------------------------------------------------- parallel


def test_shards_cover_every_volume_once(mini_root, reference, tmp_path):
    out = tmp_path / "out"
    seen: list[str] = []
    for i in (1, 2, 3):
        report = export_nifti(mini_root, out, shard=f"{i}/3")
        assert report.manifest_path.name == f"manifest.shard-{i}-of-3.csv"
        seen += [v.file for v in report.volumes]
    assert sorted(seen) == sorted(n for n in reference if n.endswith(".nii.gz"))
    final = export_nifti(mini_root, out)  # verifies, writes the whole manifest
    assert final.written == 0
    assert (out / "manifest.csv").read_bytes() == reference["manifest.csv"]
    with pytest.raises(NiftiExportError, match="i/N"):
        parse_shard("0/3")
    assert parse_shard("2/4") == (2, 4)


def test_two_workers_match_one(mini_root, reference, tmp_path):
    export_nifti(mini_root, tmp_path / "out", workers=2)
    assert _snapshot(tmp_path / "out") == reference


def test_dask_scheduler_matches_serial(mini_root, reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        export_nifti(mini_root, tmp_path / "out", scheduler=cluster.scheduler_address)
    assert _snapshot(tmp_path / "out") == reference


def test_compression_backends_hold_the_same_voxels(mini_root, tmp_path):
    pytest.importorskip("isal")
    sub = SubVolume("000005_01_01", 2, 14, (0.9, 0.9, 5.0))
    index = index_volumes(mini_root)
    index.volumes = [v for v in index.volumes if v.name == sub.name]
    arrays = []
    for backend in ("zlib", "isal"):
        report = export_nifti(mini_root, tmp_path / backend, index=index, compression=backend)
        raw = gzip.decompress(report.paths[0].read_bytes())
        arrays.append(raw)
    assert arrays[0] == arrays[1]


# --------------------------------------------------------------------------- CLI, demo


def test_cli_nifti_and_volumes(mini_root, reference, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["nifti", str(mini_root), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "5 volumes" in result.output
    assert _snapshot(tmp_path / "out") == reference
    result = runner.invoke(main, ["volumes", str(mini_root)])
    assert result.exit_code == 0 and "5 sub-volumes" in result.output
    result = runner.invoke(main, ["nifti", str(mini_root), str(tmp_path / "x"), "--shard", "4/3"])
    assert result.exit_code == 2 and "--shard" in result.output
    result = runner.invoke(main, ["nifti", str(mini_root), str(tmp_path / "x"), "--spacing", "1,2"])
    assert result.exit_code == 2 and "--spacing" in result.output


def test_demo_step(mini_root, reference, tmp_path):
    paths = demo(mini_root, mini_root / "DL_info.csv", tmp_path / "demo")
    assert all(p.is_file() for p in paths)
    assert {p.name for p in paths} == set(reference)


def test_cli_fails_when_nothing_can_be_exported(real_root, tmp_path):
    # 000062_01_01 has no DL_info row here: no spacing, so no volume
    result = CliRunner().invoke(main, ["nifti", str(real_root), str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "no volume exported" in result.output and "--spacing" in result.output


def test_unreachable_scheduler_is_a_clean_error(mini_root, tmp_path):
    import socket

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(NiftiExportError, match="cannot reach the Dask scheduler"):
        export_nifti(mini_root, tmp_path / "out", scheduler=f"tcp://127.0.0.1:{port}")
