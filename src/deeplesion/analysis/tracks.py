"""Lesion tracks: the same physical lesion linked across a patient's follow-up studies.

Matching rule (tunable through :class:`MatchRule`)
--------------------------------------------------
Studies of a patient are taken in ``Study_index`` order (assumed chronological; the
integer ``Patient_age`` is only used as a label). Each lesion of a follow-up study is
matched to at most one existing track, and each track takes at most one lesion per study,
by a minimum-cost assignment (:func:`assign`, scipy's Hungarian-type solver) on

    cost = location_weight * |loc_a - loc_b| / location_scale_norm
         + size_weight * |ln(long_a / long_b)| / size_scale
         + type_mismatch_cost      (both coarse types labelled and different)
         + skip_cost * (studies skipped since the track was last seen)

where ``loc`` is the normalised (x, y, z) location and ``long`` the long diameter in mm.
A pair whose cost exceeds ``max_cost`` is never linked; the assignment is solved with an
"unmatched" option of cost ``max_cost / 2`` per side, so a pair is linked only when that
is cheaper than leaving both alone. A link's confidence is ``1 - cost / max_cost``.
A follow-up lesion left unmatched starts a new track and counts as a new lesion.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from deeplesion.data.annotations import Lesion
from deeplesion.data.measurement import measure
from deeplesion.errors import InvalidArgumentError

# --------------------------------------------------------------------------- assignment


def assign(cost: Sequence[Sequence[float]] | np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost assignment for a rectangular matrix; returns (row, col) pairs, sorted.

    Every row is assigned when rows <= cols (else every column); entries must be finite.
    scipy's ``linear_sum_assignment`` solves it.

    Example:

        >>> assign([[4, 1], [2, 8]])  # 1 + 2 beats 4 + 8
        [(0, 1), (1, 0)]
    """
    from scipy.optimize import linear_sum_assignment

    c = np.asarray(cost, dtype=np.float64)
    if c.ndim != 2:
        raise InvalidArgumentError(f"cost must be 2-D, got shape {c.shape}")
    if c.size == 0:
        return []
    if not np.isfinite(c).all():
        raise InvalidArgumentError("cost entries must be finite")
    rows, cols = linear_sum_assignment(c)
    return sorted(zip(rows.tolist(), cols.tolist()))


def assign_with_threshold(cost: np.ndarray, max_cost: float) -> list[tuple[int, int]]:
    """Assignment where any row or column may stay unmatched at cost ``max_cost / 2``.

    Pairs costing more than ``max_cost`` (or non-finite) are never returned.
    """
    c = np.asarray(cost, dtype=np.float64)
    n, m = c.shape
    if n == 0 or m == 0:
        return []
    big = max_cost * 10 + 1.0 + float(np.nanmax(np.where(np.isfinite(c), c, 0.0)))
    full = np.full((n + m, m + n), big)
    full[:n, :m] = np.where(np.isfinite(c) & (c <= max_cost), c, big)
    full[:n, m:][np.arange(n), np.arange(n)] = max_cost / 2  # row i unmatched
    full[n:, :m][np.arange(m), np.arange(m)] = max_cost / 2  # column j unmatched
    full[n:, m:] = 0.0
    return [(i, j) for i, j in assign(full) if i < n and j < m and full[i, j] <= max_cost]


# --------------------------------------------------------------------------- matching


@dataclass(frozen=True)
class MatchRule:
    """Tunable weights of the link cost (see the module docstring)."""

    location_weight: float = 1.0
    location_scale_norm: float = 0.05  #: normalised distance that costs one unit
    size_weight: float = 0.5
    size_scale: float = math.log(2.0)  #: |ln ratio| that costs one unit (a doubling)
    type_mismatch_cost: float = 3.0
    skip_cost: float = 0.25
    max_cost: float = 2.0

    def cost(self, track_last: Lesion, candidate: Lesion, studies_skipped: int = 0) -> float:
        loc = math.dist(track_last.location_norm, candidate.location_norm)
        la, lb = measure(track_last).long_mm, measure(candidate).long_mm
        size = abs(math.log(max(la, 1e-6) / max(lb, 1e-6)))
        value = (
            self.location_weight * loc / self.location_scale_norm
            + self.size_weight * size / self.size_scale
            + self.skip_cost * studies_skipped
        )
        if (
            track_last.coarse_type > 0
            and candidate.coarse_type > 0
            and track_last.coarse_type != candidate.coarse_type
        ):
            value += self.type_mismatch_cost
        return value


@dataclass(frozen=True, slots=True)
class Observation:
    """One lesion of a track at one study."""

    lesion: Lesion
    long_mm: float
    short_mm: float
    link_cost: float | None  #: None for the first observation of a track
    confidence: float | None

    @property
    def study_index(self) -> int:
        return self.lesion.study_index


@dataclass
class Track:
    """The same physical lesion seen in several studies of one patient."""

    patient_index: int
    track_id: int  #: 1-based within the patient
    observations: list[Observation] = field(default_factory=list)
    is_new: bool = False  #: first seen in a follow-up study (a new lesion)

    @property
    def row_indexes(self) -> list[int]:
        return [o.lesion.row_index for o in self.observations]

    @property
    def first_study(self) -> int:
        return self.observations[0].study_index

    @property
    def last(self) -> Observation:
        return self.observations[-1]

    def long_mm_at(self, study_index: int) -> float | None:
        for o in self.observations:
            if o.study_index == study_index:
                return o.long_mm
        return None

    @property
    def change_mm(self) -> float:
        return self.observations[-1].long_mm - self.observations[0].long_mm

    @property
    def change_pct(self) -> float:
        first = self.observations[0].long_mm
        return 100.0 * self.change_mm / first if first else float("nan")

    @property
    def min_confidence(self) -> float | None:
        values = [o.confidence for o in self.observations if o.confidence is not None]
        return min(values) if values else None


def _observation(lesion: Lesion, cost: float | None, rule: MatchRule) -> Observation:
    m = measure(lesion)
    conf = None if cost is None else max(0.0, 1.0 - cost / rule.max_cost)
    return Observation(lesion, m.long_mm, m.short_mm, cost, conf)


def link_patient(lesions: Iterable[Lesion], rule: MatchRule = MatchRule()) -> list[Track]:
    """Link one patient's lesions into tracks, study by study (see the module docstring)."""
    lesions = sorted(
        lesions, key=lambda l: (l.study_index, l.series_id, l.key_slice_index, l.row_index)
    )
    if not lesions:
        return []
    patients = {l.patient_index for l in lesions}
    if len(patients) != 1:
        raise InvalidArgumentError(
            f"link_patient needs one patient's lesions, got {sorted(patients)}"
        )
    patient = lesions[0].patient_index
    studies = sorted({l.study_index for l in lesions})
    order = {s: i for i, s in enumerate(studies)}
    tracks: list[Track] = []
    for s_pos, study in enumerate(studies):
        current = [l for l in lesions if l.study_index == study]
        if s_pos == 0:
            for l in current:
                tracks.append(Track(patient, len(tracks) + 1, [_observation(l, None, rule)]))
            continue
        cost = np.array(
            [
                [
                    rule.cost(t.last.lesion, l, order[study] - order[t.last.study_index] - 1)
                    for l in current
                ]
                for t in tracks
            ],
            dtype=np.float64,
        )
        pairs = assign_with_threshold(cost.reshape(len(tracks), len(current)), rule.max_cost)
        matched = set()
        for ti, li in pairs:
            tracks[ti].observations.append(_observation(current[li], float(cost[ti, li]), rule))
            matched.add(li)
        for li, l in enumerate(current):
            if li not in matched:
                tracks.append(
                    Track(patient, len(tracks) + 1, [_observation(l, None, rule)], is_new=True)
                )
    return tracks


def link_all(
    lesions: Iterable[Lesion],
    rule: MatchRule = MatchRule(),
    *,
    progress: Callable[[int, int], None] | None = None,
) -> dict[int, list[Track]]:
    """{patient index: tracks} for every patient in ``lesions``."""
    by_patient: dict[int, list[Lesion]] = {}
    for l in lesions:
        by_patient.setdefault(l.patient_index, []).append(l)
    out: dict[int, list[Track]] = {}
    for done, patient in enumerate(sorted(by_patient), start=1):
        out[patient] = link_patient(by_patient[patient], rule)
        if progress:
            progress(done, len(by_patient))
    return out


def track_labels(tracks: dict[int, list[Track]]) -> dict[int, tuple[int, int]]:
    """{row index: (patient, track id)}."""
    return {
        o.lesion.row_index: (t.patient_index, t.track_id)
        for ts in tracks.values()
        for t in ts
        for o in t.observations
    }


def pair_agreement(predicted: dict[int, object], truth: dict[int, object]) -> tuple[int, int]:
    """(agreeing pairs, all pairs) over row pairs: same-track in both labelings or in neither.

    Only rows present in both mappings count.
    """
    rows = sorted(set(predicted) & set(truth))
    agree = total = 0
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            total += 1
            agree += (predicted[a] == predicted[b]) == (truth[a] == truth[b])
    return agree, total
