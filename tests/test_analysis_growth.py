"""Assignment, lesion tracks against the sample's ground truth, RECIST 1.1 response."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

from deeplesion.analysis.growth import classify, recist_responses
from deeplesion.analysis.tracks import (
    MatchRule,
    assign,
    assign_with_threshold,
    link_all,
    link_patient,
    pair_agreement,
    track_labels,
)
from deeplesion.data.annotations import load_lesions
from deeplesion.data.sample import read_truth, sample_lesions


def _brute_force(cost: np.ndarray) -> float:
    n, m = cost.shape
    if n <= m:
        return min(
            sum(cost[i, p[i]] for i in range(n)) for p in itertools.permutations(range(m), n)
        )
    return _brute_force(cost.T)


def test_assign_is_optimal_on_small_matrices():
    rng = np.random.default_rng(1)
    for _ in range(150):
        n, m = rng.integers(1, 6, size=2)
        cost = rng.integers(0, 20, size=(n, m)).astype(float)
        pairs = assign(cost)
        assert len(pairs) == min(n, m)
        assert len({i for i, _ in pairs}) == len({j for _, j in pairs}) == len(pairs)
        assert sum(cost[i, j] for i, j in pairs) == pytest.approx(_brute_force(cost))


def test_assign_with_threshold_leaves_expensive_pairs_unmatched():
    assert assign_with_threshold(np.array([[5.0]]), 2.0) == []
    assert assign_with_threshold(np.array([[1.0, 9.0], [9.0, 1.5]]), 2.0) == [(0, 0), (1, 1)]
    # Linking (0,1) and (1,0) costs 3.8 in all; linking only (0,0) at 0.1 and leaving
    # the two others unmatched costs 0.1 + 2 x (2.0 / 2) = 2.1: cheaper.
    assert assign_with_threshold(np.array([[0.1, 1.9], [1.9, 9.0]]), 2.0) == [(0, 0)]
    assert assign_with_threshold(np.zeros((0, 3)), 2.0) == []


def _partition(labels: dict[int, object]) -> set[frozenset[int]]:
    groups: dict[object, set[int]] = {}
    for row, label in labels.items():
        groups.setdefault(label, set()).add(row)
    return {frozenset(g) for g in groups.values()}


def test_tracks_match_sample_ground_truth(sample_root):
    table = load_lesions(sample_root / "DL_info.csv")
    truth = read_truth(sample_root)
    tracks = link_all(table.lesions)
    predicted = track_labels(tracks)
    assert set(predicted) == set(truth) == {l.row_index for l in table}
    agree, total = pair_agreement(predicted, truth)
    print(f"sample track matching: {agree}/{total} row pairs agree")
    assert _partition(predicted) == _partition(truth)
    # New lesions = truth tracks first seen after their patient's first study.
    by_row = {l.row_index: l for l in table}
    first_study = {}
    for l in table:
        first_study[l.patient_index] = min(first_study.get(l.patient_index, 99), l.study_index)
    truth_new = {
        g
        for g in _partition(truth)
        if min(by_row[r].study_index for r in g) > first_study[by_row[next(iter(g))].patient_index]
    }
    predicted_new = {frozenset(t.row_indexes) for ts in tracks.values() for t in ts if t.is_new}
    assert predicted_new == truth_new and truth_new  # the sample has one
    for ts in tracks.values():
        for t in ts:
            for o in t.observations[1:]:
                assert 0.0 <= o.confidence <= 1.0


def test_tight_threshold_breaks_tracks(sample_root):
    table = load_lesions(sample_root / "DL_info.csv")
    tracks = link_all(table.lesions, MatchRule(max_cost=1e-3))
    assert all(len(t.observations) == 1 for ts in tracks.values() for t in ts)


def test_type_mismatch_prevents_link():
    lesions, _ = sample_lesions()
    p2 = [l for l in lesions if l.patient_index == 2]
    # Relabel the follow-up lesions with a type no baseline lesion has.
    p2 = [replace(l, coarse_type=8) if l.study_index == 2 else l for l in p2]
    tracks = link_patient(p2)
    assert sum(t.is_new for t in tracks) == 2


def test_recist_rules_on_hand_made_sums():
    assert classify(70.0, 100.0, 100.0, 0)[0] == "PR"  # exactly -30 %
    assert classify(71.0, 100.0, 100.0, 0)[0] == "SD"
    assert classify(60.0, 100.0, 50.0, 0)[0] == "PD"  # +20 % and +10 mm over nadir
    assert classify(24.0, 30.0, 20.0, 0)[0] == "SD"  # +20 % but only +4 mm
    assert classify(24.9, 30.0, 20.0, 0)[0] == "SD"
    assert classify(25.0, 30.0, 20.0, 0)[0] == "PD"  # +25 % and +5 mm
    assert classify(0.0, 30.0, 20.0, 0)[0] == "CR"
    assert classify(10.0, 100.0, 100.0, 1)[0] == "PD"  # a new lesion wins over shrinkage
    assert classify(80.0, 100.0, 60.0, 0)[0] == "PD"  # nadir, not baseline


def _series(template, patient, study, long_px, x_norm, slice_no=10):
    half = long_px / 2
    return replace(
        template,
        patient_index=patient,
        study_index=study,
        file_name=f"{patient:06d}_{study:02d}_01_{slice_no:03d}.png",
        key_slice_index=slice_no,
        location_norm=(x_norm, 0.5, 0.5),
        spacing_mm=(1.0, 1.0, 5.0),
        diameters_px=(long_px, long_px / 2),
        recist_px1=(
            100 - half,
            100.0,
            100 + half,
            100.0,
            100.0,
            100 - half / 2,
            100.0,
            100 + half / 2,
        ),
    )


def test_recist_responses_over_studies_with_missing_target():
    template = sample_lesions()[0][0]
    rows = [
        _series(template, 9, 1, 40.0, 0.30),
        _series(template, 9, 1, 20.0, 0.70, 11),
        _series(template, 9, 2, 26.0, 0.30),  # second target not annotated: carried (20)
        _series(template, 9, 3, 30.0, 0.30),
        _series(template, 9, 3, 22.0, 0.70, 11),
    ]
    rows = [replace(r, row_index=i) for i, r in enumerate(rows)]
    tracks = link_patient(rows)
    assert sorted(t.row_indexes for t in tracks) == [[0, 2, 3], [1, 4]]
    carry = recist_responses(tracks)
    # Baseline 60; study 2: 26 + 20 = 46 (-23 %) SD; study 3: 52 = +13 % over nadir 46: SD
    assert [(r.study_index, r.sld_mm, r.category) for r in carry] == [
        (2, pytest.approx(46.0), "SD"),
        (3, pytest.approx(52.0), "SD"),
    ]
    assert carry[0].missing_targets == 1 and carry[1].nadir_mm == pytest.approx(46.0)
    assert [r.category for r in recist_responses(tracks, missing="ne")] == ["NE", "SD"]


def test_new_lesion_is_pd_unless_ignored():
    template = sample_lesions()[0][0]
    rows = [
        _series(template, 9, 1, 40.0, 0.30),
        _series(template, 9, 2, 38.0, 0.30),
        _series(template, 9, 2, 15.0, 0.90, 30),
    ]
    rows = [replace(r, row_index=i) for i, r in enumerate(rows)]
    tracks = link_patient(rows)
    assert sorted(t.row_indexes for t in tracks) == [[0, 1], [2]]
    (strict,) = recist_responses(tracks, new_lesions="pd")
    assert (strict.new_lesions, strict.category) == (1, "PD")
    (lenient,) = recist_responses(tracks)  # the default: DeepLesion's partial annotations
    # 38 vs baseline 40: -5 %, +0 mm: stable; the new lesion is still counted
    assert (lenient.new_lesions, lenient.category) == (1, "SD")


def test_plot_widens_with_studies_and_tracks_look_distinct(tmp_path):
    from PIL import Image

    from deeplesion.analysis.figures import STUDY_WIDTH_IN, plot_patient, track_style

    styles = [track_style(i) for i in range(80)]
    assert len(set(styles)) == 80  # colour + marker pairs never repeat within 80 tracks
    assert len({colour for colour, _ in styles[:20]}) == 20

    template = sample_lesions()[0][0]

    def plot(n_studies: int, name: str) -> int:
        rows = [_series(template, 9, s, 20.0 + s, 0.30) for s in range(1, n_studies + 1)]
        rows = [replace(r, row_index=i) for i, r in enumerate(rows)]
        tracks = link_patient(rows)
        path = plot_patient(tracks, tmp_path / name, recist_responses(tracks))
        with Image.open(path) as img:
            return img.size[0]

    short, long = plot(3, "short.png"), plot(20, "long.png")
    assert long >= 20 * STUDY_WIDTH_IN * 100  # every study gets its share of width at 100 dpi
    assert short < long
