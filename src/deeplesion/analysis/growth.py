"""Lesion growth over follow-up studies: tracks and RECIST 1.1 response.

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

RECIST 1.1 with DeepLesion (assumptions)
----------------------------------------
* Target lesions = every lesion annotated in the patient's first study (no 5-lesion or
  2-per-organ cap, which needs clinical choice; no lymph-node flag exists, so nodes are
  measured by the long diameter like any other lesion and the 10 mm short-axis rule for
  CR of nodes is not applied).
* A target not annotated in a follow-up study is carried forward with its last
  measurement (``missing="carry"``, DeepLesion marks only some lesions per study); with
  ``missing="ne"`` that follow-up is "NE" (not evaluable).
* Sum of long diameters (SLD) vs baseline and nadir (smallest earlier SLD, baseline
  included): PD if SLD >= nadir x 1.2 and SLD - nadir >= 5 mm, or if a new lesion (an
  unmatched lesion in a follow-up study) appears; CR if SLD is 0; PR if SLD <= baseline
  x 0.7; SD otherwise.
* DeepLesion often annotates different lesions in each study, so on the real data many
  follow-ups have an unmatched lesion; ``new_lesions="ignore"`` still counts them but
  classifies by the sums of long diameters alone.
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


# --------------------------------------------------------------------------- RECIST


@dataclass(frozen=True, slots=True)
class Response:
    """RECIST 1.1 assessment of one follow-up study of a patient."""

    patient_index: int
    study_index: int
    sld_mm: float  #: sum of long diameters of the target lesions
    baseline_mm: float
    nadir_mm: float  #: smallest SLD before this study (baseline included)
    new_lesions: int
    missing_targets: int
    category: str  #: CR, PR, SD, PD or NE
    reason: str

    @property
    def change_from_baseline_pct(self) -> float:
        return (
            100.0 * (self.sld_mm - self.baseline_mm) / self.baseline_mm
            if self.baseline_mm
            else float("nan")
        )

    @property
    def change_from_nadir_pct(self) -> float:
        return (
            100.0 * (self.sld_mm - self.nadir_mm) / self.nadir_mm if self.nadir_mm else float("nan")
        )


PR_THRESHOLD = -0.30
PD_THRESHOLD = 0.20
PD_ABSOLUTE_MM = 5.0


def classify(
    sld_mm: float, baseline_mm: float, nadir_mm: float, new_lesions: int
) -> tuple[str, str]:
    """RECIST 1.1 category and reason from the sums of long diameters.

    Example:

        >>> classify(30.0, baseline_mm=50.0, nadir_mm=50.0, new_lesions=0)[0]  # -40 %
        'PR'
        >>> classify(62.0, baseline_mm=50.0, nadir_mm=40.0, new_lesions=0)[0]  # +55 %, +22 mm
        'PD'
        >>> classify(45.0, baseline_mm=50.0, nadir_mm=50.0, new_lesions=1)
        ('PD', '1 new lesion(s)')
    """
    if new_lesions:
        return "PD", f"{new_lesions} new lesion(s)"
    growth = sld_mm - nadir_mm
    if nadir_mm > 0 and growth >= PD_THRESHOLD * nadir_mm and growth >= PD_ABSOLUTE_MM:
        return "PD", (
            f"SLD {sld_mm:.1f} mm is +{100 * growth / nadir_mm:.0f}% "
            f"(+{growth:.1f} mm) over nadir {nadir_mm:.1f} mm"
        )
    if nadir_mm == 0 and growth >= PD_ABSOLUTE_MM:
        return "PD", f"SLD {sld_mm:.1f} mm after complete response"
    if sld_mm == 0:
        return "CR", "all target lesions gone"
    if baseline_mm > 0 and sld_mm <= (1 + PR_THRESHOLD) * baseline_mm:
        return "PR", (
            f"SLD {sld_mm:.1f} mm is {100 * (sld_mm / baseline_mm - 1):.0f}% "
            f"of baseline {baseline_mm:.1f} mm"
        )
    return "SD", "neither PR nor PD"


def recist_responses(
    tracks: Sequence[Track], *, missing: str = "carry", new_lesions: str = "pd"
) -> list[Response]:
    """RECIST 1.1 response at each follow-up study of one patient's tracks.

    ``new_lesions="pd"`` (RECIST) makes a follow-up with a new lesion PD; ``"ignore"``
    counts new lesions but classifies by the sums of long diameters only.
    """
    if missing not in ("carry", "ne"):
        raise InvalidArgumentError(f"missing must be 'carry' or 'ne', got {missing!r}")
    if new_lesions not in ("pd", "ignore"):
        raise InvalidArgumentError(f"new_lesions must be 'pd' or 'ignore', got {new_lesions!r}")
    if not tracks:
        return []
    studies = sorted({o.study_index for t in tracks for o in t.observations})
    baseline_study = studies[0]
    targets = [t for t in tracks if t.first_study == baseline_study]
    last_seen = {t.track_id: t.observations[0].long_mm for t in targets}
    baseline = sum(last_seen.values())
    history = [baseline]
    out: list[Response] = []
    for study in studies[1:]:
        missing_count = 0
        for t in targets:
            value = t.long_mm_at(study)
            if value is None:
                missing_count += 1
            else:
                last_seen[t.track_id] = value
        sld = sum(last_seen.values())
        new = sum(1 for t in tracks if t.is_new and t.first_study == study)
        decisive_new = new if new_lesions == "pd" else 0
        nadir = min(history)
        if missing == "ne" and missing_count and not decisive_new:
            category, reason = "NE", f"{missing_count} target lesion(s) not measured"
        else:
            category, reason = classify(sld, baseline, nadir, decisive_new)
        out.append(
            Response(
                tracks[0].patient_index,
                study,
                sld,
                baseline,
                nadir,
                new,
                missing_count,
                category,
                reason,
            )
        )
        history.append(sld)
    return out


@dataclass
class GrowthAnalysis:
    """Each patient's tracks and RECIST responses (no response: a single study)."""

    tracks: dict[int, list[Track]]
    responses: dict[int, list[Response]]

    @property
    def followed(self) -> dict[int, list[Track]]:
        """The patients with follow-up studies, and their tracks."""
        return {p: ts for p, ts in self.tracks.items() if self.responses[p]}


def analyse_growth(
    lesions: Iterable[Lesion],
    rule: MatchRule = MatchRule(),
    *,
    missing: str = "carry",
    new_lesions: str = "pd",
) -> GrowthAnalysis:
    """Link every patient's lesions into tracks (:func:`link_all`) and assess each
    follow-up study (:func:`recist_responses`)."""
    tracks = link_all(lesions, rule)
    responses = {
        p: recist_responses(ts, missing=missing, new_lesions=new_lesions)
        for p, ts in tracks.items()
    }
    return GrowthAnalysis(tracks, responses)
