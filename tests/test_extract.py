"""Safe extraction of release-style zips, and completeness of the extracted copy."""

from __future__ import annotations

import os
import stat
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from deeplesion.cli import main
from deeplesion.data.annotations import Lesion, write_dl_info
from deeplesion.data.slices import read_hu, write_hu_png
from deeplesion.demo import extract_step as demo
from deeplesion.fetch.completeness import completeness
from deeplesion.fetch.extract import extract_all, extract_archive, find_archives


def _png_bytes(tmp_path: Path, seed: int) -> bytes:
    hu = np.random.default_rng(seed).integers(-1024, 3072, size=(16, 16)).astype(np.int16)
    path = tmp_path / "staging" / f"{seed}.png"
    write_hu_png(path, hu)
    return path.read_bytes()


def _zip(
    path: Path,
    members: list[tuple[str | zipfile.ZipInfo, bytes]],
    compression: int = zipfile.ZIP_DEFLATED,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def _files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


@pytest.fixture()
def slices(tmp_path: Path) -> dict[str, bytes]:
    """Release-style member names -> 16-bit PNG bytes."""
    names = [f"Images_png/000001_01_01/{n:03d}.png" for n in range(1, 9)] + [
        f"Images_png/000002_01_02/{n:03d}.png" for n in (10, 11)
    ]
    return {name: _png_bytes(tmp_path, i) for i, name in enumerate(names)}


def test_extract_writes_every_member_and_skips_them_on_rerun(tmp_path, slices):
    items = list(slices.items())
    zips = tmp_path / "zips"
    _zip(zips / "Images_png_01.zip", items[:6])
    _zip(zips / "Images_png_02.zip", items[6:], zipfile.ZIP_STORED)
    root = tmp_path / "root"
    report = extract_all(find_archives(zips), root)
    assert report.ok and report.written == len(slices) and report.skipped == 0
    for name, data in slices.items():
        assert (root / name).read_bytes() == data
    hu = read_hu(root / items[0][0])  # a readable 16-bit slice
    assert hu.shape == (16, 16)
    assert not [p for p in root.rglob("*") if p.name.startswith(".")]  # no temp files
    again = extract_all(find_archives(zips), root)
    assert again.written == 0 and again.skipped == len(slices)
    # same size, different bytes: the CRC check catches it; the file is reported and kept
    # (it may be the user's), and replaced only with overwrite=True
    target = root / items[1][0]
    damaged = bytearray(target.read_bytes())
    damaged[-5] ^= 0xFF
    target.write_bytes(bytes(damaged))
    third = extract_all(find_archives(zips), root)
    assert third.written == 0 and third.skipped == len(slices) - 1
    assert [p.member for p in third.problems] == [items[1][0]]
    assert "other contents" in third.problems[0].reason
    assert target.read_bytes() == bytes(damaged)
    fourth = extract_all(find_archives(zips), root, overwrite=True)
    assert fourth.written == 1 and fourth.skipped == len(slices) - 1
    assert target.read_bytes() == items[1][1]


def test_members_without_images_png_prefix_land_under_it(tmp_path, slices):
    data = next(iter(slices.values()))
    archive = _zip(tmp_path / "Images_png_03.zip", [("000005_01_01/001.png", data)])
    result = extract_archive(archive, tmp_path / "root")
    assert result.ok and result.written == 1
    assert (tmp_path / "root" / "Images_png" / "000005_01_01" / "001.png").read_bytes() == data


def test_zip_slip_absolute_and_link_members_write_nothing_outside_root(tmp_path, slices):
    good_name, good = next(iter(slices.items()))
    link = zipfile.ZipInfo("Images_png/000001_01_01/link.png")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    outside = tmp_path / "outside"
    outside.mkdir()
    absolute = zipfile.ZipInfo("absolute.png")
    absolute.filename = str(outside / "absolute.png")  # ZipInfo() would strip the leading /
    fifo = zipfile.ZipInfo("Images_png/000001_01_01/fifo")
    fifo.create_system = 3
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    evil = [
        ("../escaped.png", b"x"),
        ("Images_png/../../escaped2.png", b"x"),
        (absolute, b"x"),
        ("C:/windows.png", b"x"),
        ("..\\backslash.png", b"x"),
        (link, b"../../outside/target.png"),
        (fifo, b""),
    ]
    archive = _zip(tmp_path / "zips" / "Images_png_04.zip", evil + [(good_name, good)])
    root = tmp_path / "root"
    before = _files_under(tmp_path)
    result = extract_archive(archive, root)
    assert result.written == 1 and (root / good_name).read_bytes() == good
    refused = {p.member: p.reason for p in result.problems}
    assert set(refused) == {
        info.filename if isinstance(info, zipfile.ZipInfo) else info for info, _ in evil
    }
    assert "link" in refused[link.filename] and "absolute" in refused[absolute.filename]
    assert "absolute" in refused["C:/windows.png"] and "special" in refused[fifo.filename]
    new_files = _files_under(tmp_path) - before
    assert new_files == {f"root/{good_name}"}


def test_a_link_inside_root_pointing_outside_is_not_followed(tmp_path, slices):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    (root / "Images_png").mkdir(parents=True)
    os.symlink(outside, root / "Images_png" / "000007_01_01")
    archive = _zip(
        tmp_path / "Images_png_05.zip",
        [("Images_png/000007_01_01/001.png", next(iter(slices.values())))],
    )
    result = extract_archive(archive, root)
    assert result.written == 0 and len(result.problems) == 1
    assert "outside ROOT" in result.problems[0].reason
    assert not list(outside.iterdir())


def test_truncated_and_corrupt_archives_are_named_and_the_rest_extracted(tmp_path, slices):
    items = list(slices.items())
    zips = tmp_path / "zips"
    _zip(zips / "Images_png_01.zip", items[:3])
    truncated = _zip(zips / "Images_png_02.zip", items[3:6])
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    corrupt = _zip(zips / "Images_png_03.zip", items[6:], zipfile.ZIP_STORED)
    raw = bytearray(corrupt.read_bytes())
    # flip one byte inside the first member's data (stored: data follows the local header)
    with zipfile.ZipFile(corrupt) as zf:
        first = zf.infolist()[0]
    header = 30 + len(first.filename.encode()) + len(first.extra)
    raw[first.header_offset + header + 40] ^= 0xFF
    corrupt.write_bytes(bytes(raw))
    root = tmp_path / "root"
    report = extract_all(find_archives(zips), root)
    assert [a.archive.name for a in report.unreadable] == [truncated.name]
    assert [(p.archive, p.member) for p in report.problems] == [(corrupt.name, first.filename)]
    assert "CRC" in report.problems[0].reason
    assert not (root / first.filename).exists()
    for name, data in items[:3] + items[7:]:
        assert (root / name).read_bytes() == data
    assert not [p for p in root.rglob("*") if p.name.startswith(".")]
    result = CliRunner().invoke(main, ["extract", str(zips), str(root)])
    assert result.exit_code == 1
    assert truncated.name in result.output and first.filename in result.output


def test_crc_mismatch_is_detected_independently_of_zipfile(tmp_path, slices):
    """The stored CRC-32 is the one of the member bytes (computed here with zlib)."""
    name, data = next(iter(slices.items()))
    archive = _zip(tmp_path / "Images_png_06.zip", [(name, data)], zipfile.ZIP_STORED)
    with zipfile.ZipFile(archive) as zf:
        assert zlib.crc32(data) == zf.getinfo(name).CRC
    result = extract_archive(archive, tmp_path / "root")
    assert result.ok and zlib.crc32((tmp_path / "root" / name).read_bytes()) == zlib.crc32(data)


# ------------------------------------------------------------------ completeness


def _lesion(row: int, folder: tuple[int, int, int], key: int, first: int, last: int) -> Lesion:
    patient, study, series = folder
    return Lesion(
        row_index=row,
        file_name=f"{patient:06d}_{study:02d}_{series:02d}_{key:03d}.png",
        patient_index=patient,
        study_index=study,
        series_id=series,
        key_slice_index=key,
        recist_px1=(4.0, 4.0, 12.0, 12.0, 6.0, 10.0, 10.0, 6.0),
        box_px1=(3.0, 3.0, 13.0, 13.0),
        diameters_px=(11.3, 5.7),
        location_norm=(0.5, 0.5, 0.5),
        coarse_type=-1,
        possibly_noisy=False,
        slice_range=(first, last),
        spacing_mm=(0.8, 0.8, 5.0),
        image_size=(16, 16),
        dicom_window_hu=(-175.0, 275.0),
        sex="F",
        age_years=50.0,
        split_code=1,
    )


def test_completeness_and_info_after_extraction(tmp_path, slices):
    # series A expects slices 1..8 (ranges 1-5 and 4-8), B 10..12, C 20..21 (never shipped)
    lesions = [
        _lesion(0, (1, 1, 1), 3, 1, 5),
        _lesion(1, (1, 1, 1), 6, 4, 8),
        _lesion(2, (2, 1, 2), 11, 10, 12),
        _lesion(3, (3, 1, 1), 20, 20, 21),
    ]
    archive = _zip(tmp_path / "zips" / "Images_png_01.zip", list(slices.items()))
    root = tmp_path / "root"
    assert extract_archive(archive, root).ok
    write_dl_info(lesions, root / "DL_info.csv")
    c = completeness(root, lesions)
    assert (c.series_expected, c.series_present, c.series_complete) == (3, 2, 1)
    assert (c.slices_expected, c.slices_present) == (8 + 3 + 2, 8 + 2)
    assert (c.key_slices_expected, c.key_slices_present) == (4, 3)
    assert c.missing_series == ("000003_01_01",) and not c.complete
    result = CliRunner().invoke(main, ["info", str(root)])
    assert result.exit_code == 0, result.output
    assert "series present: 2 of 3 (1 complete)" in result.output
    assert "slices present: 10 of 13" in result.output
    assert "key slices present: 3 of 4" in result.output


def test_demo_step_round_trips_part_of_the_sample(tmp_path, sample_root):
    written = demo(sample_root, sample_root / "DL_info.csv", tmp_path / "out")
    assert all(p.is_file() for p in written)
    folders = sorted(p for p in (sample_root / "Images_png").iterdir() if p.is_dir())[:4]
    sources = [png for folder in folders for png in sorted(folder.glob("*.png"))]
    copy = tmp_path / "out" / "extracted"
    for png in sources:
        assert (copy / png.relative_to(sample_root)).read_bytes() == png.read_bytes()
    assert len(list(copy.rglob("*.png"))) == len(sources)
    summary = (tmp_path / "out" / "extract.txt").read_text()
    assert f"extracted {len(sources)} files" in summary
    assert f"series present: 4 of {len(list((sample_root / 'Images_png').iterdir()))}" in summary


def test_file_folder_clashes_are_reported_not_fatal(tmp_path, slices):
    items = list(slices.items())
    clash = (
        [("Images_png/000001_01_01", b"a file where a folder goes")]
        + items[:2]
        + [("Images_png/000002_01_02/011.png/inner.png", b"x"), items[-1]]
    )
    archive = _zip(tmp_path / "Images_png_07.zip", clash)
    result = extract_archive(archive, tmp_path / "root")
    # in member order: the file 000001_01_01 blocks the two slices meant to go inside it;
    # the folder 011.png (made for inner.png) blocks the slice 011.png
    assert [p.member for p in result.problems] == [items[0][0], items[1][0], items[-1][0]]
    assert result.written == 2
    assert (tmp_path / "root" / "Images_png" / "000001_01_01").read_bytes() == clash[0][1]
    assert (tmp_path / "root" / clash[3][0]).read_bytes() == b"x"
