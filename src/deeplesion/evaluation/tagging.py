"""Lesion tagging metrics (LesaNet / MULAN, 171 tags).

Arrays are ``[lesion, tag]``: ``scores`` (float), ``labels`` (bool, relevant) and ``mask``
(bool, True where the label counts; uncertain labels are False). Conventions follow the
NIH authors' evaluation code:

* per-tag AUC (ROC area, ties counted as half: the Mann-Whitney statistic) for tags with
  at least two counted lesions and both classes present; ``mean_auc`` is their mean and
  ``weighted_mean_auc`` weighs each tag by its share of all counted positive labels;
* per-tag precision / recall / F1 for tags with both classes present (others NaN, left out
  of the means); precision is 1 when nothing is predicted, recall 1 when nothing is
  relevant, F1 is 0 when precision + recall is 0;
* overall (micro) precision / recall / F1 over every counted label;
* a tag is predicted when ``score >= threshold``; per-tag thresholds are chosen on val
  from 0.20, 0.25, ..., 0.95 to maximise F1 (the smallest best one; 1.0 for a tag without
  both classes on val or with F1 = 0 everywhere). The upstream ontology post-processing
  (adding parents, suppressing mutually exclusive tags) is not applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deeplesion.data.table import read_table
from deeplesion.data.tags import load_hand_labeled, load_text_mined
from deeplesion.evaluation.errors import EvaluationError, PredictionError, prediction_rows

#: Candidate thresholds of the upstream search (np.arange(.2, 1, .05)).
THRESHOLD_GRID = np.arange(0.2, 1, 0.05)
#: Threshold of a tag for which val gives no information.
DEFAULT_THRESHOLD = 1.0


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC from ranks (ties averaged); NaN unless both classes are present."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    new_group = np.ones(len(scores), dtype=bool)
    new_group[1:] = sorted_scores[1:] != sorted_scores[:-1]
    group = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:], len(scores))
    mean_rank = (starts + 1 + ends) / 2.0  # 1-based ranks start+1 .. end, averaged
    ranks = np.empty(len(scores))
    ranks[order] = mean_rank[group]
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _prf(labels: np.ndarray, predicted: np.ndarray) -> tuple[float, float, float]:
    tp = int((labels & predicted).sum())
    n_pred, n_rel = int(predicted.sum()), int(labels.sum())
    precision = tp / n_pred if n_pred else 1.0
    recall = tp / n_rel if n_rel else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _check(
    scores: np.ndarray, labels: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    mask = np.ones(labels.shape, dtype=bool) if mask is None else np.asarray(mask, bool)
    if scores.ndim != 2 or scores.shape != labels.shape or mask.shape != labels.shape:
        raise EvaluationError(
            f"scores {scores.shape}, labels {labels.shape} and mask "
            f"{mask.shape} must be equal 2-D [lesion, tag] shapes"
        )
    if not np.isfinite(scores[mask]).all():
        raise EvaluationError("non-finite tag score")
    return scores, labels, mask


def choose_thresholds(
    scores: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray | None = None,
    grid: Sequence[float] | np.ndarray = THRESHOLD_GRID,
) -> np.ndarray:
    """Per-tag threshold maximising F1 on these (validation) arrays."""
    scores, labels, mask = _check(scores, labels, mask)
    thresholds = np.full(labels.shape[1], DEFAULT_THRESHOLD)
    for tag in range(labels.shape[1]):
        keep = mask[:, tag]
        lb, sc = labels[keep, tag], scores[keep, tag]
        if not (lb.any() and (~lb).any()):
            continue
        best = 0.0
        for t in grid:
            f1 = _prf(lb, sc >= t)[2]
            if f1 > best:
                best, thresholds[tag] = f1, t
    return thresholds


@dataclass
class TaggingResult:
    terms: list[str]
    auc_per_tag: np.ndarray
    precision_per_tag: np.ndarray
    recall_per_tag: np.ndarray
    f1_per_tag: np.ndarray
    mean_auc: float
    weighted_mean_auc: float
    mean_precision: float
    mean_recall: float
    mean_f1: float
    overall_precision: float
    overall_recall: float
    overall_f1: float
    n_lesions: int
    thresholds: np.ndarray

    def to_json(self, per_tag: bool = False) -> dict:
        def num(v: float) -> float | None:
            return None if np.isnan(v) else float(v)

        out: dict[str, object] = {
            "n_lesions": self.n_lesions,
            "n_tags": len(self.terms),
            "n_tags_with_auc": int(np.count_nonzero(~np.isnan(self.auc_per_tag))),
            "mean_auc": num(self.mean_auc),
            "weighted_mean_auc": num(self.weighted_mean_auc),
            "mean_precision": num(self.mean_precision),
            "mean_recall": num(self.mean_recall),
            "mean_f1": num(self.mean_f1),
            "overall_precision": num(self.overall_precision),
            "overall_recall": num(self.overall_recall),
            "overall_f1": num(self.overall_f1),
        }
        if per_tag:
            out["per_tag"] = {
                t: {
                    "auc": num(a),
                    "precision": num(p),
                    "recall": num(r),
                    "f1": num(f),
                    "threshold": float(th),
                }
                for t, a, p, r, f, th in zip(
                    self.terms,
                    self.auc_per_tag,
                    self.precision_per_tag,
                    self.recall_per_tag,
                    self.f1_per_tag,
                    self.thresholds,
                )
            }
        return out


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if len(finite) else float("nan")


def tagging_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray | None = None,
    thresholds: float | Sequence[float] | np.ndarray = 0.5,
    terms: Sequence[str] | None = None,
) -> TaggingResult:
    """All tagging metrics of ``scores`` against ``labels`` where ``mask`` is True."""
    scores, labels, mask = _check(scores, labels, mask)
    n_tags = labels.shape[1]
    th = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (n_tags,)).copy()
    predicted = scores >= th[None, :]
    aucs, precisions, recalls, f1s = (np.full(n_tags, np.nan) for _ in range(4))
    for tag in range(n_tags):
        keep = mask[:, tag]
        lb = labels[keep, tag]
        if not (lb.any() and (~lb).any()):
            continue
        precisions[tag], recalls[tag], f1s[tag] = _prf(lb, predicted[keep, tag])
        if keep.sum() > 1:
            aucs[tag] = auc(scores[keep, tag], lb)
    positives = (labels & mask).sum(axis=0).astype(np.float64)
    weights = positives / positives.sum() if positives.sum() else positives
    overall = _prf(labels[mask], predicted[mask])
    return TaggingResult(
        terms=list(terms) if terms is not None else [str(i) for i in range(n_tags)],
        auc_per_tag=aucs,
        precision_per_tag=precisions,
        recall_per_tag=recalls,
        f1_per_tag=f1s,
        mean_auc=_nanmean(aucs),
        weighted_mean_auc=float(np.nansum(aucs * weights)),
        mean_precision=_nanmean(precisions),
        mean_recall=_nanmean(recalls),
        mean_f1=_nanmean(f1s),
        overall_precision=overall[0],
        overall_recall=overall[1],
        overall_f1=overall[2],
        n_lesions=labels.shape[0],
        thresholds=th,
    )


# --------------------------------------------------------------------------- label files


@dataclass
class TagLabels:
    """Labels of a set of lesions: ``lesion_idxs`` are 0-based rows of the full DL_info."""

    terms: list[str]
    lesion_idxs: np.ndarray
    relevant: np.ndarray  #: bool [lesion, tag]
    mask: np.ndarray  #: bool [lesion, tag]; False = uncertain (not counted)


def _matrix(lists: Sequence[Sequence[int]], n_tags: int) -> np.ndarray:
    out = np.zeros((len(lists), n_tags), dtype=bool)
    for i, tags in enumerate(lists):
        out[i, list(tags)] = True
    return out


def lesanet_labels(path: str | Path, split: str = "test") -> TagLabels:
    """Text-mined labels of one split from LesaNet's ``text_mined_labels_171_and_split.json``.

    Uncertain labels are masked out; every other label not marked relevant is negative.
    """
    mined = load_text_mined(path)
    rows = mined.split_rows(split)
    index = {t: i for i, t in enumerate(mined.terms)}
    relevant = _matrix([[index[t] for t in mined.by_row[r].relevant] for r in rows], len(index))
    uncertain = _matrix([[index[t] for t in mined.by_row[r].uncertain] for r in rows], len(index))
    return TagLabels(
        mined.terms, np.asarray(rows, dtype=np.int64), relevant & ~uncertain, ~uncertain
    )


def hand_labelled(path: str | Path, terms: Sequence[str]) -> TagLabels:
    """LesaNet's 500 hand-labelled test lesions (``hand_labeled_test_set.json``).

    Every tag is labelled: ``expanded_terms`` are relevant, the rest negative. Terms
    outside ``terms`` are ignored.
    """
    items = load_hand_labeled(path)
    index = {t: i for i, t in enumerate(terms)}
    relevant = _matrix([[index[t] for t in item.terms if t in index] for item in items], len(terms))
    return TagLabels(
        list(terms),
        np.array([item.row_index for item in items], dtype=np.int64),
        relevant,
        np.ones_like(relevant),
    )


def read_tag_scores(path: str | Path, terms: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """A scores CSV: header ``lesion_idx,<term>,...`` (every term), one row per lesion.

    Returns ``(lesion_idxs, scores[lesion, tag])`` with tags in ``terms`` order.
    """
    path = Path(path)
    table = read_table(path, ["lesion_idx", *terms], error=PredictionError)
    if table.header[0] != "lesion_idx":
        raise PredictionError("expected header lesion_idx,<term>,...", file=str(path), line=1)
    idxs, rows = [], []
    for row in prediction_rows(table):
        idxs.append(row.integer("lesion_idx"))
        rows.append(row.finite(terms, "score"))
    return np.array(idxs, dtype=np.int64), np.array(rows, dtype=np.float64).reshape(-1, len(terms))


def align_scores(
    labels: TagLabels, lesion_idxs: np.ndarray, scores: np.ndarray, source: str = ""
) -> np.ndarray:
    """Scores rows reordered to ``labels.lesion_idxs``; every labelled lesion must be scored."""
    where = {int(i): k for k, i in enumerate(lesion_idxs)}
    missing = [int(i) for i in labels.lesion_idxs if int(i) not in where]
    if missing:
        raise PredictionError(
            f"{len(missing)} labelled lesions have no scores (first lesion_idx {missing[0]})",
            file=source,
        )
    return scores[[where[int(i)] for i in labels.lesion_idxs]]
