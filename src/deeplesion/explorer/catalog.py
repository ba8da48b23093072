"""Table queries of the explorer: filtering and sorting 32,735 rows in numpy, one lesion
with its slices and track, one patient with tracks and responses, similar lesions, body-map
points. Everything is computed from a loaded :class:`LesionTable`; nothing is written.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from deeplesion.data.annotations import (
    LESION_TYPES,
    SPLIT_CODES,
    TYPE_CODES,
    Lesion,
    LesionTable,
)
from deeplesion.errors import DeepLesionError

if TYPE_CHECKING:
    from deeplesion.analysis.retrieval import LesionIndex


class ParameterError(DeepLesionError, ValueError):
    """A query parameter that cannot be used; ``parameter`` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        super().__init__(f"parameter {parameter!r}: {message}")


class NotFoundError(DeepLesionError, LookupError):
    """A lesion, patient or slice that does not exist."""


#: Columns the list can be sorted by (API name -> array attribute of the catalog).
SORT_KEYS = (
    "row_index",
    "file_name",
    "patient",
    "type",
    "long_mm",
    "short_mm",
    "interval_mm",
    "split",
)
MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class LesionFilter:
    """What the lesion list shows. ``None`` (or empty) means no restriction."""

    split: int | None = None  #: split code 1/2/3
    type_code: int | None = None
    min_long_mm: float | None = None
    max_long_mm: float | None = None
    min_interval_mm: float | None = None
    max_interval_mm: float | None = None
    patient: int | None = None
    noisy: bool | None = None
    q: str = ""  #: case-insensitive substring of the file name
    tags: tuple[str, ...] = ()  #: LesaNet terms, all required (children count)
    sort: str = "row_index"
    descending: bool = False


def _number(params: Mapping[str, str], name: str, *, minimum: float = 0.0) -> float | None:
    text = params.get(name, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ParameterError(name, f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < minimum:
        raise ParameterError(name, f"{text!r} must be a finite number >= {minimum:g}")
    return value


def _integer(
    params: Mapping[str, str], name: str, default: int | None, minimum: int, maximum: int
) -> int | None:
    text = params.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ParameterError(name, f"{text!r} is not a whole number") from None
    if not minimum <= value <= maximum:
        raise ParameterError(name, f"{value} is outside {minimum}..{maximum}")
    return value


def type_code(text: str) -> int:
    """``'liver'``, ``'soft tissue'``/``'soft-tissue'``, ``'unlabelled'`` -> type code."""
    key = text.strip().lower().replace("-", " ").replace("_", " ")
    if key not in TYPE_CODES:
        names = ", ".join(LESION_TYPES[c] for c in sorted(LESION_TYPES))
        raise ParameterError("type", f"unknown type {text!r}; allowed: {names}")
    return TYPE_CODES[key]


def parse_filter(params: Mapping[str, str], tags: tuple[str, ...] = ()) -> LesionFilter:
    """Query parameters -> :class:`LesionFilter`; :class:`ParameterError` names the bad one."""
    split_text = params.get("split", "").strip().lower()
    if split_text and split_text not in SPLIT_CODES:
        raise ParameterError("split", f"unknown split {split_text!r}; allowed: train, val, test")
    noisy_text = params.get("noisy", "").strip().lower()
    if noisy_text not in ("", "0", "1", "true", "false"):
        raise ParameterError("noisy", f"{noisy_text!r}: use 0 or 1")
    sort = params.get("sort", "").strip() or "row_index"
    descending = sort.startswith("-")
    sort = sort.lstrip("-")
    if sort not in SORT_KEYS:
        raise ParameterError("sort", f"unknown column {sort!r}; allowed: {', '.join(SORT_KEYS)}")
    f = LesionFilter(
        split=SPLIT_CODES[split_text] if split_text else None,
        type_code=type_code(params["type"]) if params.get("type", "").strip() else None,
        min_long_mm=_number(params, "min_long_mm"),
        max_long_mm=_number(params, "max_long_mm"),
        min_interval_mm=_number(params, "min_interval_mm"),
        max_interval_mm=_number(params, "max_interval_mm"),
        patient=_integer(params, "patient", None, 0, 10**9),
        noisy=None if not noisy_text else noisy_text in ("1", "true"),
        q=params.get("q", "").strip().lower(),
        tags=tuple(t.strip() for t in tags if t.strip()),
        sort=sort,
        descending=descending,
    )
    for low, high in (("min_long_mm", "max_long_mm"), ("min_interval_mm", "max_interval_mm")):
        lo, hi = getattr(f, low), getattr(f, high)
        if lo is not None and hi is not None and lo > hi:
            raise ParameterError(low, f"{lo:g} exceeds {high} {hi:g}")
    return f


def page_bounds(params: Mapping[str, str]) -> tuple[int, int]:
    """(offset, limit) from the query; limit 1..1000 (default 100)."""
    offset = _integer(params, "offset", 0, 0, 10**9)
    limit = _integer(params, "limit", 100, 1, MAX_LIMIT)
    assert offset is not None and limit is not None
    return offset, limit


def lesion_item(lesion: Lesion) -> dict:
    """The list row of one lesion (the API's item)."""
    return {
        "row_index": lesion.row_index,
        "file_name": lesion.file_name,
        "patient": lesion.patient_index,
        "study": lesion.study_index,
        "series": lesion.series_id,
        "key_slice": lesion.key_slice_index,
        "type": lesion.type_name,
        "long_mm": round(lesion.long_diameter_mm, 2),
        "short_mm": round(lesion.short_diameter_mm, 2),
        "interval_mm": lesion.slice_interval_mm,
        "split": lesion.split,
        "noisy": lesion.possibly_noisy,
    }


class Catalog:
    """Index of a lesion table for the explorer's queries (thread-safe reads)."""

    def __init__(self, table: LesionTable, tagged=None, lesanet=None) -> None:
        self.table = table
        self.lesions: list[Lesion] = list(table.lesions)
        self.tagged = tagged  #: deeplesion.data.tags.TaggedTable or None
        self.lesanet = lesanet  #: deeplesion.data.tags.LesaNet or None
        n = len(self.lesions)
        self._split = np.fromiter((l.split_code for l in self.lesions), np.int8, n)
        self._type = np.fromiter((l.coarse_type for l in self.lesions), np.int8, n)
        self._long_mm = np.fromiter((l.long_diameter_mm for l in self.lesions), np.float64, n)
        self._short_mm = np.fromiter((l.short_diameter_mm for l in self.lesions), np.float64, n)
        self._interval_mm = np.fromiter((l.spacing_mm[2] for l in self.lesions), np.float64, n)
        self._patient = np.fromiter((l.patient_index for l in self.lesions), np.int64, n)
        self._noisy = np.fromiter((l.possibly_noisy for l in self.lesions), bool, n)
        self._row = np.fromiter((l.row_index for l in self.lesions), np.int64, n)
        self._names = [l.file_name.lower() for l in self.lesions]
        self.position = {l.row_index: i for i, l in enumerate(self.lesions)}
        self.by_file: dict[str, list[Lesion]] = {}
        self.by_folder: dict[str, list[Lesion]] = {}
        self.by_patient: dict[int, list[Lesion]] = {}
        for l in self.lesions:
            self.by_file.setdefault(l.file_name, []).append(l)
            self.by_folder.setdefault(l.series_folder, []).append(l)
            self.by_patient.setdefault(l.patient_index, []).append(l)
        self._lock = threading.Lock()
        self._index: LesionIndex | None = None  # built on the first similar-lesion query
        self._tracks = lru_cache(maxsize=256)(self._link)

    # ----------------------------------------------------------------- list

    def select(self, f: LesionFilter) -> np.ndarray:
        """Positions (into ``self.lesions``) matching ``f``, in the requested order."""
        keep = np.ones(len(self.lesions), dtype=bool)
        if f.split is not None:
            keep &= self._split == f.split
        if f.type_code is not None:
            keep &= self._type == f.type_code
        if f.min_long_mm is not None:
            keep &= self._long_mm >= f.min_long_mm
        if f.max_long_mm is not None:
            keep &= self._long_mm <= f.max_long_mm
        if f.min_interval_mm is not None:
            keep &= self._interval_mm >= f.min_interval_mm
        if f.max_interval_mm is not None:
            keep &= self._interval_mm <= f.max_interval_mm
        if f.patient is not None:
            keep &= self._patient == f.patient
        if f.noisy is not None:
            keep &= self._noisy == f.noisy
        if f.q:
            keep &= np.fromiter((f.q in n for n in self._names), bool, len(self._names))
        if f.tags:
            keep &= self._tag_mask(f.tags)
        positions = np.flatnonzero(keep)
        return positions[self._order(positions, f.sort, f.descending)]

    def _tag_mask(self, tags: tuple[str, ...]) -> np.ndarray:
        from deeplesion.data.ontology import UnknownTagError

        if self.tagged is None or self.lesanet is None:
            raise ParameterError(
                "tag", "tags need the official DL_info.csv and the LesaNet files (--lesanet)"
            )
        wanted = []
        for tag in tags:
            try:
                wanted.append(self.lesanet.expand(tag))
            except UnknownTagError as exc:
                raise ParameterError("tag", str(exc)) from None
        mask = np.zeros(len(self.lesions), dtype=bool)
        for i, lesion in enumerate(self.lesions):
            t = self.tagged.tags_of(lesion)
            mask[i] = t is not None and all(t.relevant & w for w in wanted)
        return mask

    def _order(self, positions: np.ndarray, sort: str, descending: bool) -> np.ndarray:
        if sort == "row_index":
            key = self._row[positions]
        elif sort == "file_name":
            key = np.array([self._names[i] for i in positions], dtype=str)
        else:
            columns: dict[str, np.ndarray] = {
                "patient": self._patient,
                "type": self._type,
                "long_mm": self._long_mm,
                "short_mm": self._short_mm,
                "interval_mm": self._interval_mm,
                "split": self._split,
            }
            key = columns[sort][positions]
        if descending:
            key = _descending_key(key)
        return np.lexsort((self._row[positions], key))  # ties keep row order

    def counts(self, positions: np.ndarray) -> dict:
        """Lesions by type and split among ``positions``."""
        types, type_n = np.unique(self._type[positions], return_counts=True)
        splits, split_n = np.unique(self._split[positions], return_counts=True)
        from deeplesion.data.annotations import SPLITS

        return {
            "type": {LESION_TYPES[int(t)]: int(c) for t, c in zip(types, type_n)},
            "split": {SPLITS[int(s)]: int(c) for s, c in zip(splits, split_n)},
            "patients": int(np.unique(self._patient[positions]).size),
        }

    def page(self, f: LesionFilter, offset: int, limit: int) -> dict:
        positions = self.select(f)
        items = [lesion_item(self.lesions[i]) for i in positions[offset : offset + limit]]
        return {
            "total": int(positions.size),
            "offset": offset,
            "limit": limit,
            "items": items,
            "counts": self.counts(positions),
        }

    # ----------------------------------------------------------------- one lesion

    def lesion(self, row_index: int) -> Lesion:
        if row_index not in self.position:
            raise NotFoundError(f"no lesion with row_index {row_index}")
        return self.lesions[self.position[row_index]]

    def same_slice(self, lesion: Lesion) -> list[Lesion]:
        return [l for l in self.by_file[lesion.file_name] if l.row_index != lesion.row_index]

    def lesions_on(self, file_name: str) -> list[Lesion]:
        """The lesions annotated on a slice (empty for a slice that is no key slice)."""
        return list(self.by_file.get(file_name, ()))

    def dicom_window(self, folder: str) -> tuple[float, float] | None:
        """The DICOM window of the first row of a series folder (None if it has none)."""
        rows = self.by_folder.get(folder)
        return rows[0].dicom_window_hu if rows else None

    # ----------------------------------------------------------------- growth

    def _link(self, patient: int):
        from deeplesion.analysis.growth import recist_responses
        from deeplesion.analysis.tracks import link_patient

        tracks = link_patient(self.by_patient[patient])
        return tracks, recist_responses(tracks)

    def tracks(self, patient: int):
        """(tracks, RECIST responses) of one patient, as ``deeplesion growth`` links them."""
        if patient not in self.by_patient:
            raise NotFoundError(f"no patient {patient}")
        return self._tracks(patient)

    def track_of(self, lesion: Lesion):
        """The growth track holding ``lesion`` (link_patient puts every lesion on one)."""
        tracks, _ = self.tracks(lesion.patient_index)
        return next(t for t in tracks if lesion.row_index in t.row_indexes)

    # ----------------------------------------------------------------- similar

    def similar(self, row_index: int, k: int):
        """The ``k`` most similar lesions of other patients (location, size, type, tags)."""
        from deeplesion.analysis.retrieval import LesionIndex

        lesion = self.lesion(row_index)
        with self._lock:
            if self._index is None:
                self._index = LesionIndex.build(self.lesions, tagged=self.tagged)
        return self._index.similar(lesion, k)

    # ----------------------------------------------------------------- body map

    def body_points(self, positions: np.ndarray) -> list[list]:
        """[row_index, x_norm, z_norm, type name] of each lesion (README Fig. 1 axes)."""
        out = []
        for i in positions:
            l = self.lesions[i]
            out.append([l.row_index, l.location_norm[0], l.location_norm[2], l.type_name])
        return out


def _descending_key(key: np.ndarray) -> np.ndarray:
    """A key that sorts ascending in the reverse order of ``key``."""
    if key.dtype.kind in "US":
        _, key = np.unique(key, return_inverse=True)  # strings -> their rank
    return -key.astype(np.float64)
