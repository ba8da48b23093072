"""Bad input of every kind ends in a clear error or the right result, with nothing lost.

Grouped by the sections of the bad-input campaign: data safety (writers, locks, downloads,
archives), bad images, annotations, partial roots, the test run itself. Every bad input is
built here in ``tmp_path``; nothing large is committed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from deeplesion.cli import main
from deeplesion.data.io import LOCK_NAME, check_new_output, output_lock
from deeplesion.errors import OutputExistsError, OutputLockedError

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def no_traceback(result) -> None:
    """A CLI result ended without an uncaught exception (exit 0 or a clean exit 1)."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.output,
        result.exception,
    )
    assert "Traceback" not in result.output


# =========================================================================== data safety
# --------------------------------------------------------------- one rule for writers


def test_check_new_output_refuses_an_existing_file_unless_overwrite(tmp_path):
    target = tmp_path / "out.json"
    assert check_new_output(target) == target  # absent: fine
    target.write_text("mine")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        check_new_output(target)
    assert check_new_output(target, overwrite=True) == target
    assert target.read_text() == "mine"  # the check itself never touches the file


@pytest.mark.parametrize(
    "command",
    [
        ["export-coco", "{csv}", "--split", "val", "--out", "{out}"],
        ["bodymap", "{csv}", "--out", "{out}.png"],
        ["gallery", "{root}", "--out", "{out}.png", "--per-type", "1"],
        ["report", "{csv}", "--out", "{out}"],
        ["growth", "{csv}", "--out", "{out}"],
    ],
    ids=lambda c: c[0],
)
def test_writers_keep_an_existing_output_unless_overwrite(sample_root, tmp_path, command):
    out = tmp_path / "result"
    if command[0] == "report":
        out.mkdir()
        existing = out / "report.html"
    elif command[0] == "growth":
        out.mkdir()
        existing = out / "tracks.csv"
    else:
        existing = Path(str(out) + (".png" if command[0] in ("bodymap", "gallery") else ""))
    existing.write_bytes(b"the user's own file")
    args = [c.format(csv=sample_root / "DL_info.csv", root=sample_root, out=out) for c in command]
    refused = run_cli(*args)
    no_traceback(refused)
    assert refused.exit_code == 1
    assert "exists; pass --overwrite" in refused.output
    assert existing.read_bytes() == b"the user's own file"
    replaced = run_cli(*args, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert existing.read_bytes() != b"the user's own file"


# --------------------------------------------------------------- one run per output folder


def test_output_lock_refuses_a_second_holder_and_is_released(tmp_path):
    with output_lock(tmp_path, command="first") as lock:
        assert lock == tmp_path / LOCK_NAME
        assert str(os.getpid()) in lock.read_text()
        with pytest.raises(OutputLockedError, match="first") as info:
            with output_lock(tmp_path, command="second"):
                pass
        assert str(lock) in str(info.value)  # says which file to delete if stale
    assert not (tmp_path / LOCK_NAME).exists()


def test_output_lock_takes_over_a_stale_lock(tmp_path):
    # a lock left by a process that no longer exists on this host
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    dead_pid = int(child.stdout)
    import socket

    (tmp_path / LOCK_NAME).write_text(
        f'{{"pid": {dead_pid}, "host": "{socket.gethostname()}", "command": "x", "started": ""}}'
    )
    with output_lock(tmp_path, command="new"):
        assert '"command": "new"' in (tmp_path / LOCK_NAME).read_text()


def test_output_lock_is_exclusive_between_threads(tmp_path):
    """Many contenders at once: exactly one gets the lock (O_EXCL, no check-then-create)."""
    won, lost = [], []
    barrier = threading.Barrier(8)
    hold = threading.Event()

    def contend() -> None:
        barrier.wait()
        try:
            with output_lock(tmp_path):
                won.append(1)
                hold.wait(2)
        except OutputLockedError:
            lost.append(1)

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for t in threads:
        t.start()
    while len(won) + len(lost) < 8 and not (won and len(lost) == 7):
        threading.Event().wait(0.01)
    hold.set()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 7


@pytest.mark.parametrize("command", ["render", "nifti", "extract", "download"])
def test_a_second_run_into_a_locked_folder_stops_and_says_so(sample_root, tmp_path, command):
    out = tmp_path / "out"
    if command == "render":
        args = ["render", sample_root, "--out", out]
    elif command == "nifti":
        args = ["nifti", sample_root, out]
    elif command == "extract":
        import zipfile

        with zipfile.ZipFile(tmp_path / "Images_png_01.zip", "w") as zf:
            zf.writestr("Images_png/000001_01_01/001.png", b"x")
        args = ["extract", tmp_path / "Images_png_01.zip", out]
    else:
        manifest = tmp_path / "manifest.tsv"
        manifest.write_text("file\turl\tmd5\nImages_png_01.zip\thttp://127.0.0.1:9/x\t\n")
        args = ["download", out, "--manifest", manifest, "--retries", "0"]
    with output_lock(out, command="the first run"):
        result = run_cli(*args)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing else written
    no_traceback(result)
    assert result.exit_code == 1
    assert "being written by another run" in result.output
    assert "the first run" in result.output


# =========================================================================== test run


def test_a_run_that_skips_real_data_tests_ends_with_one_loud_line(tmp_path):
    env = dict(os.environ, DEEPLESION_REAL_DATA=str(tmp_path / "absent"), CI="")
    env["PYTHONPATH"] = str(REPO / "src")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_slices.py",
            "-k",
            "real",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "skipped" in run.stdout
    last = run.stdout.strip().splitlines()
    loud = [line for line in last if "REAL-DATA TESTS SKIPPED" in line]
    assert len(loud) == 1, run.stdout
    assert "DEEPLESION_REAL_DATA" in loud[0] and str(tmp_path / "absent") in loud[0]
