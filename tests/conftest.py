"""Shared fixtures. Real DeepLesion files are found through DEEPLESION_REAL_DATA."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_DEFAULT_REAL = REPO.parent / "shared" / "data" / "deeplesion-real"
#: Start of the skip reason of every test that needs the real files (the run summary counts them).
REAL_DATA_SKIP = "real DeepLesion data not found"


def _real_root() -> Path:
    return Path(os.environ.get("DEEPLESION_REAL_DATA", _DEFAULT_REAL))


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder of real DeepLesion files; missing is a failure under CI, else a skip."""
    root = _real_root()
    if not root.is_dir():
        message = f"{REAL_DATA_SKIP} at {root} (set DEEPLESION_REAL_DATA)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def real_val_csv(real_data: Path) -> Path:
    return real_data / "fsafe__Capstone" / "annotation_info" / "DL_info_val.csv"


@pytest.fixture(scope="session")
def real_excerpt_csv(real_data: Path) -> Path:
    return real_data / "donghwanseo__joint_conference" / "DL_info.csv"


@pytest.fixture(scope="session")
def real_liver_dir(real_data: Path) -> Path:
    """The 23 real liver key slices (flat folder of ``{folder}_{slice}.png``) and their rows."""
    return real_data / "ragram88__DeepLesionClassifiers" / "Data" / "Raghav"


@pytest.fixture(scope="session")
def real_series_dir(real_data: Path) -> Path:
    """29 consecutive real slices of series 000062_01_01 (056.png .. 084.png)."""
    return real_data / "aholovenko__sa-21-deep-lesion" / "data" / "000062_01_01"


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic sample (seed 0), generated once per test session. Treat as read-only."""
    from deeplesion.data.sample import write_sample

    return write_sample(tmp_path_factory.mktemp("sample") / "root", seed=0)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """End a run that skipped the real-data tests with one line that cannot be missed."""
    skipped = [
        r
        for r in terminalreporter.stats.get("skipped", [])
        if REAL_DATA_SKIP in str(getattr(r, "longrepr", ""))
    ]
    if skipped:
        terminalreporter.write_line(
            f"!!! {len(skipped)} REAL-DATA TESTS SKIPPED: {_real_root()} not found; set "
            "DEEPLESION_REAL_DATA to the folder of real DeepLesion files (README, Quick start)",
            red=True,
            bold=True,
        )
