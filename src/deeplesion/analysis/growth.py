"""Lesion growth over follow-up studies: RECIST 1.1 response of the tracks that
:mod:`deeplesion.analysis.tracks` links.

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
* DeepLesion annotates only some lesions in each study, so an unmatched lesion in a
  follow-up is usually one annotated for the first time, not a new lesion (on the val
  split, 621 of 896 follow-ups would be PD for that alone). The default
  (``new_lesions="ignore"``) lists such lesions as new annotations and classifies by the
  sums of long diameters of the target tracks alone; ``new_lesions="pd"`` is strict RECIST
  1.1 (an unmatched lesion makes the follow-up PD).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from deeplesion.analysis.tracks import MatchRule, Track, link_all
from deeplesion.data.annotations import Lesion
from deeplesion.errors import InvalidArgumentError

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


#: The new-lesion rules and what each assumes, as printed and drawn on the plots.
NEW_LESION_RULES = {
    "ignore": "unmatched follow-up lesions are new annotations, not new lesions "
    "(DeepLesion annotates only some lesions); response from the sum of long diameters "
    "of the first study's lesions",
    "pd": "strict RECIST 1.1: an unmatched follow-up lesion is a new lesion (PD)",
}


def recist_responses(
    tracks: Sequence[Track], *, missing: str = "carry", new_lesions: str = "ignore"
) -> list[Response]:
    """RECIST 1.1 response at each follow-up study of one patient's tracks.

    ``new_lesions="ignore"`` (the default, for DeepLesion's partial annotations) counts
    unmatched lesions as new annotations and classifies by the sums of long diameters
    only; ``"pd"`` (strict RECIST 1.1) makes a follow-up with a new lesion PD.
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
    new_lesions: str = "ignore"  #: the rule the responses follow (:data:`NEW_LESION_RULES`)

    @property
    def followed(self) -> dict[int, list[Track]]:
        """The patients with follow-up studies, and their tracks."""
        return {p: ts for p, ts in self.tracks.items() if self.responses[p]}


def analyse_growth(
    lesions: Iterable[Lesion],
    rule: MatchRule = MatchRule(),
    *,
    missing: str = "carry",
    new_lesions: str = "ignore",
) -> GrowthAnalysis:
    """Link every patient's lesions into tracks (:func:`link_all`) and assess each
    follow-up study (:func:`recist_responses`)."""
    tracks = link_all(lesions, rule)
    responses = {
        p: recist_responses(ts, missing=missing, new_lesions=new_lesions)
        for p, ts in tracks.items()
    }
    return GrowthAnalysis(tracks, responses, new_lesions)
