"""Similar-lesion retrieval: a feature vector per lesion and a cosine-similarity index.

Feature blocks (each column standardised to zero mean and unit variance over the indexed
lesions, each block scaled by ``weight / sqrt(columns)``, rows then L2-normalised, so a
query is one matrix product):

* ``location``: normalised x, y, z;
* ``size``: ln long and short diameter (mm) and their ratio;
* ``type``: one-hot coarse type (all zero when unlabelled);
* ``tags``: multi-hot LesaNet relevant terms (needs a :class:`~deeplesion.data.tags.TaggedTable`);
* ``image``: HU statistics inside the fitted ellipse on the key slice (mean, std,
  10/50/90th percentiles) and the mean of the ring just outside it (needs a dataset root;
  missing slices get the column mean).

32,735 lesions x a few hundred columns is a few tens of MB of float32: brute force is fast.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deeplesion.data.annotations import Lesion
from deeplesion.data.measurement import measure
from deeplesion.errors import DeepLesionError, ImageReadError, InvalidArgumentError

DEFAULT_WEIGHTS = {"location": 1.0, "size": 1.0, "type": 1.0, "tags": 1.0, "image": 1.0}
TYPE_CODES = tuple(range(1, 9))
IMAGE_FEATURES = ("mean_hu", "std_hu", "p10_hu", "p50_hu", "p90_hu", "ring_mean_hu")


class RetrievalError(DeepLesionError, LookupError):
    """A query lesion that is not in the index."""


def location_size_features(lesions: Sequence[Lesion]) -> dict[str, np.ndarray]:
    loc = np.array([l.location_norm for l in lesions], dtype=np.float64).reshape(-1, 3)
    sizes = []
    for l in lesions:
        m = measure(l)
        long_mm, short_mm = max(m.long_mm, 0.1), max(m.short_mm, 0.1)
        sizes.append((math.log(long_mm), math.log(short_mm), short_mm / long_mm))
    size = np.array(sizes, dtype=np.float64).reshape(-1, 3)
    types = np.zeros((len(lesions), len(TYPE_CODES)))
    for i, l in enumerate(lesions):
        if l.coarse_type in TYPE_CODES:
            types[i, l.coarse_type - 1] = 1.0
    return {"location": loc, "size": size, "type": types}


def tag_features(lesions: Sequence[Lesion], tagged, terms: Sequence[str]) -> np.ndarray:
    """Multi-hot relevant terms; rows without tags are all zero."""
    col = {t: j for j, t in enumerate(terms)}
    out = np.zeros((len(lesions), len(terms)))
    for i, l in enumerate(lesions):
        t = tagged.tags_of(l)
        if t is not None:
            for term in t.relevant:
                out[i, col[term]] = 1.0
    return out


def image_features(
    root: str | Path,
    lesions: Sequence[Lesion],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """HU statistics of each lesion's patch (NaN rows for unreadable slices)."""
    from deeplesion.data.paths import key_slice_path
    from deeplesion.data.slices import read_hu
    from deeplesion.review.crops import ellipse_mask, hu_patch

    out = np.full((len(lesions), len(IMAGE_FEATURES)), np.nan)
    cache: dict[Path, np.ndarray] = {}
    for i, l in enumerate(lesions):
        path = key_slice_path(root, l.file_name)
        try:
            if path not in cache:
                cache.clear()  # rows are grouped by key slice: keep only the last one
                cache[path] = read_hu(path)
            hu = cache[path]
        except (ImageReadError, FileNotFoundError):
            if progress:
                progress(i + 1, len(lesions))
            continue
        patch, origin = hu_patch(hu, l, scale=3.0)
        inside = ellipse_mask(patch.shape, l, origin)
        ring = ellipse_mask(patch.shape, l, origin, grow=1.6) & ~inside
        values = patch[inside].astype(np.float64)
        if values.size:
            p10, p50, p90 = np.percentile(values, [10, 50, 90])
            ring_mean = patch[ring].mean() if ring.any() else np.nan
            out[i] = (values.mean(), values.std(), p10, p50, p90, ring_mean)
        if progress:
            progress(i + 1, len(lesions))
    return out


def _standardise(block: np.ndarray) -> np.ndarray:
    block = np.array(block, dtype=np.float64)
    finite = np.isfinite(block)
    counts = finite.sum(axis=0)
    means = np.where(finite, block, 0.0).sum(axis=0) / np.maximum(counts, 1)  # 0 if none
    block = np.where(np.isfinite(block), block, means)
    std = block.std(axis=0)
    return (block - means) / np.where(std > 0, std, 1.0)


@dataclass(frozen=True, slots=True)
class Neighbour:
    lesion: Lesion
    similarity: float  #: cosine similarity in [-1, 1]


@dataclass
class LesionIndex:
    """Normalised feature rows of a list of lesions (see the module docstring)."""

    lesions: list[Lesion]
    vectors: np.ndarray  #: float32 [lesion, feature], unit rows
    blocks: dict[str, slice] = field(default_factory=dict)
    _position: dict[int, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._position = {l.row_index: i for i, l in enumerate(self.lesions)}

    @classmethod
    def build(
        cls,
        lesions: Sequence[Lesion],
        *,
        weights: dict[str, float] | None = None,
        tagged=None,
        terms: Sequence[str] | None = None,
        root: str | Path | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> LesionIndex:
        """Index ``lesions``. Blocks with weight 0 or without their data are left out."""
        lesions = list(lesions)
        w = dict(DEFAULT_WEIGHTS)
        w.update(weights or {})
        unknown = set(w) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise InvalidArgumentError(
                f"unknown feature blocks {sorted(unknown)}; allowed: {sorted(DEFAULT_WEIGHTS)}"
            )
        raw = location_size_features(lesions)
        if tagged is not None and w["tags"]:
            if terms is None:
                terms = sorted({t for tags in tagged.tags.values() for t in tags.relevant})
            raw["tags"] = tag_features(lesions, tagged, terms)
        if root is not None and w["image"]:
            raw["image"] = image_features(root, lesions, progress=progress)
        parts, blocks, start = [], {}, 0
        for name, block in raw.items():
            if not w[name] or block.shape[1] == 0:
                continue
            scaled = _standardise(block) * (w[name] / math.sqrt(block.shape[1]))
            parts.append(scaled)
            blocks[name] = slice(start, start + block.shape[1])
            start += block.shape[1]
        if not parts:
            raise InvalidArgumentError("no feature block left: give at least one non-zero weight")
        vectors = np.concatenate(parts, axis=1)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)
        return cls(lesions, vectors, blocks)

    def position(self, lesion: Lesion | int) -> int:
        row = lesion if isinstance(lesion, int) else lesion.row_index
        if row not in self._position:
            raise RetrievalError(f"row {row} is not in the index")
        return self._position[row]

    def _mask(self, query_positions: np.ndarray, same_patient: bool) -> np.ndarray:
        """True where a (query, candidate) pair is not allowed."""
        cand_patient = np.array([l.patient_index for l in self.lesions])
        q_patient = cand_patient[query_positions]
        if same_patient:
            mask = np.zeros((len(query_positions), len(self.lesions)), dtype=bool)
        else:
            mask = q_patient[:, None] == cand_patient[None, :]
        mask[np.arange(len(query_positions)), query_positions] = True
        return mask

    def search(
        self,
        query_positions: Sequence[int] | np.ndarray,
        k: int = 10,
        *,
        same_patient: bool = False,
        chunk: int = 512,
    ) -> np.ndarray:
        """Positions of the ``k`` nearest lesions for each query position, best first.

        The query itself is never returned; other lesions of the query's patient only
        with ``same_patient`` (they are often the same lesion in another study).
        Returns int array [query, k] (-1 where fewer candidates exist).
        """
        q = np.asarray(query_positions, dtype=np.int64)
        out = np.full((len(q), k), -1, dtype=np.int64)
        for s in range(0, len(q), chunk):
            qs = q[s : s + chunk]
            sims = self.vectors[qs] @ self.vectors.T
            sims[self._mask(qs, same_patient)] = -np.inf
            kk = min(k, sims.shape[1])
            top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
            order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
            top = np.take_along_axis(top, order, axis=1)
            valid = np.isfinite(np.take_along_axis(sims, top, axis=1))
            out[s : s + chunk, :kk] = np.where(valid, top, -1)
        return out

    def similar(
        self, lesion: Lesion | int, k: int = 10, *, same_patient: bool = False
    ) -> list[Neighbour]:
        """The ``k`` lesions most similar to ``lesion`` (a Lesion or its row index)."""
        pos = self.position(lesion)
        found = self.search([pos], k, same_patient=same_patient)[0]
        return [
            Neighbour(self.lesions[j], float(self.vectors[pos] @ self.vectors[j]))
            for j in found
            if j >= 0
        ]


def precision_at_k(
    index: LesionIndex,
    k: int,
    relevant: Callable[[Lesion, Lesion], bool],
    *,
    queries: Sequence[int] | None = None,
    same_patient: bool = False,
) -> float:
    """Mean fraction of the top ``k`` neighbours that are ``relevant`` to the query.

    ``queries``: index positions (default: all).
    """
    q = np.arange(len(index.lesions)) if queries is None else np.asarray(queries)
    if len(q) == 0:
        raise InvalidArgumentError("no queries")
    found = index.search(q, k, same_patient=same_patient)
    scores = []
    for qi, row in zip(q, found):
        hits = [relevant(index.lesions[qi], index.lesions[j]) for j in row if j >= 0]
        if hits:
            scores.append(sum(hits) / len(hits))
    return float(np.mean(scores)) if scores else float("nan")


def type_precision_at_k(index: LesionIndex, k: int = 10, **kwargs) -> float:
    """Precision at k of sharing the coarse type, over queries with a labelled type."""
    queries = [i for i, l in enumerate(index.lesions) if l.coarse_type in TYPE_CODES]
    return precision_at_k(
        index, k, lambda a, b: a.coarse_type == b.coarse_type, queries=queries, **kwargs
    )


def tag_precision_at_k(index: LesionIndex, tagged, k: int = 10, **kwargs) -> float:
    """Precision at k of sharing at least one relevant LesaNet term, over tagged queries."""

    def relevant(a: Lesion, b: Lesion) -> bool:
        ta, tb = tagged.tags_of(a), tagged.tags_of(b)
        return bool(ta and tb and ta.relevant & tb.relevant)

    queries = [
        i
        for i, l in enumerate(index.lesions)
        if tagged.tags_of(l) is not None and tagged.tags_of(l).relevant
    ]
    return precision_at_k(index, k, relevant, queries=queries, **kwargs)


def parse_weights(items: Iterable[str]) -> dict[str, float]:
    """``["size=2", "image=0"]`` -> ``{"size": 2.0, "image": 0.0}``; the blocks are those of
    :data:`DEFAULT_WEIGHTS`. InvalidArgumentError naming the item otherwise."""
    weights = {}
    for item in items:
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in DEFAULT_WEIGHTS:
            raise InvalidArgumentError(
                f"{item!r}: unknown feature block {name!r}; allowed: {', '.join(DEFAULT_WEIGHTS)}"
            )
        try:
            weights[name] = float(value)
        except ValueError:
            raise InvalidArgumentError(f"{item!r}: expected BLOCK=NUMBER") from None
    return weights
