"""Relationship mining: which lesion types (or LesaNet tags) are annotated together.

A *group* is a patient, a study or a key slice (``within``). Each lesion carries a set of
labels: its coarse type (val and test rows only; train rows are unlabelled) or its
relevant LesaNet tags. Only groups holding at least one labelled lesion count. For two
labels A and B:

* ``n_a`` / ``n_b``: groups with a lesion labelled A / B; ``n_both``: groups with both
  (for tags, two different lesions, or one lesion carrying both);
* ``expected = n_a * n_b / n_groups`` (independence), ``lift = n_both / expected``;
* Fisher's exact test (two-sided, scipy) on the 2 x 2 table of groups, then a
  multiple-testing correction over all tested pairs: Benjamini-Hochberg (false discovery
  rate, the default) or Holm (family-wise error);
* distances: the Euclidean distance in normalised body coordinates
  (``Normalized_lesion_location`` x, y, z, each in [0, 1]) between every lesion labelled
  A and every other lesion labelled B in the same group; the median is reported.

Follow-up: a patient's studies in ``Study_index`` order (those with a labelled lesion);
for each study that has a next one and each label it holds, whether the next study
holds that label again.

DeepLesion annotates a subset of the lesions in each study (those the radiologist
measured), so all of this describes relations between *annotated* lesions.

The tables and the heat map that show the result are written by
:mod:`deeplesion.analysis.relations_output`.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from deeplesion.data.annotations import LESION_TYPES, Lesion
from deeplesion.errors import DeepLesionError

WITHIN = ("patient", "study", "slice")
#: How a count of groups reads.
GROUP_NOUNS = {"patient": "patients", "study": "studies", "slice": "key slices"}
BY = ("type", "tag")
CORRECTIONS = {"bh": "Benjamini-Hochberg", "holm": "Holm"}
SUBSET_NOTE = (
    "DeepLesion annotates a subset of the lesions in each study, so these are relations "
    "between annotated lesions, not between all lesions the patients had."
)
PAIR_COLUMNS = (
    "label_a",
    "label_b",
    "n_groups",
    "n_a",
    "n_b",
    "n_both",
    "expected",
    "lift",
    "odds_ratio",
    "p_value",
    "p_adjusted",
    "n_distance_pairs",
    "median_distance_norm",
)


class RelationsError(DeepLesionError, ValueError):
    """Relations that cannot be computed (unknown option, nothing labelled)."""


@dataclass(frozen=True)
class PairRelation:
    """Co-occurrence of two labels over the groups (see the module docstring)."""

    label_a: str
    label_b: str
    n_groups: int
    n_a: int
    n_b: int
    n_both: int
    expected: float
    lift: float
    odds_ratio: float
    p_value: float
    p_adjusted: float
    n_distance_pairs: int
    median_distance_norm: float | None


@dataclass(frozen=True)
class LabelCount:
    label: str
    n_lesions: int
    n_groups: int  #: groups with at least one lesion of this label
    n_groups_repeated: int  #: groups with two or more lesions of this label


@dataclass(frozen=True)
class FollowUpRate:
    """How often a label held by a study is annotated again in the patient's next study."""

    label: str
    n_with_next: int  #: (study, label) pairs whose study has a next study
    n_again: int
    rate: float | None


@dataclass
class Relations:
    by: str
    within: str
    correction: str
    n_groups: int
    n_lesions: int  #: labelled lesions counted
    labels: list[LabelCount]
    pairs: list[PairRelation]  #: strongest first
    followup: list[FollowUpRate]
    note: str = SUBSET_NOTE
    unlabelled_lesions: int = 0
    extra: dict = field(default_factory=dict)

    def to_json(self, max_pairs: int | None = None) -> dict:
        def clean(d: dict) -> dict:
            return {
                k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in d.items()
            }

        pairs = self.pairs if max_pairs is None else self.pairs[:max_pairs]
        return {
            "by": self.by,
            "within": self.within,
            "correction": CORRECTIONS[self.correction],
            "n_groups": self.n_groups,
            "n_lesions": self.n_lesions,
            "unlabelled_lesions": self.unlabelled_lesions,
            "note": self.note,
            "labels": [asdict(c) for c in self.labels],
            "pairs": [clean(asdict(p)) for p in pairs],
            "n_pairs": len(self.pairs),
            "followup": [asdict(f) for f in self.followup],
        }


# --------------------------------------------------------------------------- labels


def type_labels(lesions: Iterable[Lesion]) -> dict[int, frozenset[str]]:
    """Row index -> {type name} for lesions with a coarse type (val and test rows)."""
    return {
        l.row_index: frozenset([LESION_TYPES[l.coarse_type]]) for l in lesions if l.coarse_type > 0
    }


def tag_labels(
    tags: Mapping[int, object], *, include_uncertain: bool = False
) -> dict[int, frozenset[str]]:
    """Row index -> relevant LesaNet terms (plus uncertain ones if asked), from
    :attr:`deeplesion.data.tags.TaggedTable.tags` (a mapping to ``LesionTags``)."""
    out = {}
    for row, t in tags.items():
        terms = t.relevant | t.uncertain if include_uncertain else t.relevant  # type: ignore[attr-defined]
        if terms:
            out[int(row)] = frozenset(terms)
    return out


def group_key(lesion: Lesion, within: str) -> object:
    if within == "patient":
        return lesion.patient_index
    if within == "study":
        return (lesion.patient_index, lesion.study_index)
    if within == "slice":
        return lesion.file_name
    raise RelationsError(f"within must be one of {', '.join(WITHIN)}, got {within!r}")


# --------------------------------------------------------------------------- statistics


def adjust_p(p_values: Sequence[float], method: str = "bh") -> np.ndarray:
    """Multiple-testing adjusted p-values: ``bh`` (Benjamini-Hochberg, via scipy) or
    ``holm`` (step-down: the k-th smallest times (m - k + 1), made monotone, capped at 1)."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return p
    if method == "bh":
        from scipy.stats import false_discovery_control

        return np.asarray(false_discovery_control(p, method="bh"), dtype=np.float64)
    if method == "holm":
        order = np.argsort(p, kind="stable")
        m = p.size
        stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
        out = np.empty(m)
        out[order] = np.minimum(stepped, 1.0)
        return out
    raise RelationsError(f"correction must be one of {', '.join(CORRECTIONS)}, got {method!r}")


def _distances(
    members: Sequence[Lesion], labels: Mapping[int, Collection[str]], a: str, b: str
) -> list[float]:
    out = []
    for x in members:
        if a not in labels[x.row_index]:
            continue
        for y in members:
            if y.row_index != x.row_index and b in labels[y.row_index]:
                out.append(math.dist(x.location_norm, y.location_norm))
    return out


def relations(
    lesions: Iterable[Lesion],
    labels: Mapping[int, Collection[str]] | None = None,
    *,
    by: str = "type",
    within: str = "patient",
    correction: str = "bh",
    label_order: Sequence[str] | None = None,
) -> Relations:
    """Co-occurrence, lift, Fisher's exact test and follow-up rates of lesion labels.

    ``labels``: row index -> labels of that lesion (default: the coarse types). Lesions
    without labels are left out (counted in ``unlabelled_lesions``).
    """
    from scipy.stats import fisher_exact

    if by not in BY:
        raise RelationsError(f"by must be one of {', '.join(BY)}, got {by!r}")
    if correction not in CORRECTIONS:
        raise RelationsError(f"correction must be one of {', '.join(CORRECTIONS)}")
    if within not in WITHIN:
        raise RelationsError(f"within must be one of {', '.join(WITHIN)}, got {within!r}")
    lesions = list(lesions)
    if labels is None:
        labels = type_labels(lesions)
    if label_order is None and by == "type":
        label_order = [name for code, name in LESION_TYPES.items() if code > 0]
    labelled = [l for l in lesions if labels.get(l.row_index)]
    if not labelled:
        raise RelationsError(
            f"no lesion carries a {by} label"
            + (" (coarse types are on val and test rows only)" if by == "type" else "")
        )
    groups: dict[object, list[Lesion]] = defaultdict(list)
    for l in labelled:
        groups[group_key(l, within)].append(l)
    n = len(groups)
    present: dict[str, set] = defaultdict(set)
    lesion_count: dict[str, int] = defaultdict(int)
    repeated: dict[str, int] = defaultdict(int)
    for key, members in groups.items():
        per: dict[str, int] = defaultdict(int)
        for l in members:
            for lab in labels[l.row_index]:
                per[lab] += 1
                lesion_count[lab] += 1
        for lab, count in per.items():
            present[lab].add(key)
            if count >= 2:
                repeated[lab] += 1
    names = [x for x in (label_order or []) if x in present] + sorted(
        x for x in present if x not in set(label_order or [])
    )
    counts = [LabelCount(x, lesion_count[x], len(present[x]), repeated[x]) for x in names]
    raw = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = present[a] & present[b]
            n_a, n_b, n_ab = len(present[a]), len(present[b]), len(both)
            table = [[n_ab, n_a - n_ab], [n_b - n_ab, n - n_a - n_b + n_ab]]
            res = fisher_exact(table, alternative="two-sided")
            dists = [d for key in both for d in _distances(groups[key], labels, a, b)]
            expected = n_a * n_b / n
            raw.append(
                (a, b, n_a, n_b, n_ab, expected, float(res.statistic), float(res.pvalue), dists)
            )
    adjusted = adjust_p([r[7] for r in raw], correction)
    pairs = [
        PairRelation(
            a,
            b,
            n,
            n_a,
            n_b,
            n_ab,
            expected,
            n_ab / expected,
            odds,
            p,
            float(p_adj),
            len(dists),
            float(np.median(dists)) if dists else None,
        )
        for (a, b, n_a, n_b, n_ab, expected, odds, p, dists), p_adj in zip(raw, adjusted)
    ]
    pairs.sort(key=lambda r: (r.p_adjusted, r.p_value, -abs(_log_lift(r.lift)), r.label_a))
    return Relations(
        by=by,
        within=within,
        correction=correction,
        n_groups=n,
        n_lesions=len(labelled),
        labels=counts,
        pairs=pairs,
        followup=followup_rates(labelled, labels, label_order=names),
        unlabelled_lesions=len(lesions) - len(labelled),
    )


def _log_lift(lift: float) -> float:
    return math.log(lift) if lift > 0 else -math.inf


def followup_rates(
    lesions: Iterable[Lesion],
    labels: Mapping[int, Collection[str]],
    *,
    label_order: Sequence[str] | None = None,
) -> list[FollowUpRate]:
    """Per label: of the studies holding it that have a next study (same patient, next
    ``Study_index`` with a labelled lesion), the share whose next study holds it again."""
    studies: dict[int, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for l in lesions:
        if labels.get(l.row_index):
            studies[l.patient_index][l.study_index].update(labels[l.row_index])
    with_next: dict[str, int] = defaultdict(int)
    again: dict[str, int] = defaultdict(int)
    for by_study in studies.values():
        order = sorted(by_study)
        for s, nxt in itertools.pairwise(order):
            for lab in by_study[s]:
                with_next[lab] += 1
                again[lab] += lab in by_study[nxt]
    names = list(label_order) if label_order is not None else sorted(with_next)
    return [
        FollowUpRate(x, with_next[x], again[x], again[x] / with_next[x] if with_next[x] else None)
        for x in names
    ]
