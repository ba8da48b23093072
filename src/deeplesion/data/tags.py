"""LesaNet semantic tags: the 171 text-mined terms, the hand-labelled test set, the ontology.

Files (from the NIH LesaNet release, ``program_data/``):

* ``text_mined_labels_171_and_split.json``: ``term_list`` (171 terms) and, per split
  (train / val / test), ``<split>_lesion_idxs`` and ``<split>_{relevant,uncertain,
  irrelevant}_labels`` (lists of term indexes, one list per lesion; the val and test
  splits carry no irrelevant lists). Lesion indexes are 0-based DATA ROW indexes of the
  full official DL_info.csv (32,735 rows), the ``row_index`` of a :class:`Lesion`.
* ``hand_labeled_test_set.json``: 500 lesions, each ``lesion_idx``, ``text`` and
  ``expanded_terms`` (radiologist labels, expanded up the ontology; some terms are
  outside the 171).
* ``lesion_ontology_181022.xlsx``: the ontology of the terms, read by
  :mod:`deeplesion.data.ontology`.

Row indexes mean nothing in a split file or an excerpt, so :func:`join_tags` accepts only
the official DL_info.csv (checked by its git blob id) unless told otherwise.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from deeplesion.data.annotations import (
    OFFICIAL_BLOB_ID,
    OFFICIAL_ROWS,
    Lesion,
    LesionTable,
    git_blob_id,
    load_lesions,
)
from deeplesion.data.ontology import (
    ONTOLOGY_FILE,
    Ontology,
    TagFileError,
    UnknownTagError,
    load_ontology,
)
from deeplesion.errors import FingerprintError, InvalidArgumentError, MissingDataError

TEXT_MINED_FILE = "text_mined_labels_171_and_split.json"
HAND_LABELED_FILE = "hand_labeled_test_set.json"
TERM_COUNT = 171
LABEL_KINDS = ("relevant", "uncertain", "irrelevant")
TAG_SPLITS = ("train", "val", "test")
#: Environment variable naming the LesaNet ``program_data`` folder.
LESANET_ENV = "DEEPLESION_LESANET"


@dataclass(frozen=True, slots=True)
class LesionTags:
    """The text-mined labels of one lesion (term names, duplicates removed)."""

    row_index: int  #: 0-based data row of the official DL_info.csv
    split: str  #: LesaNet's split (train / val / test)
    relevant: frozenset[str]
    uncertain: frozenset[str] = frozenset()
    irrelevant: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class HandLabel:
    """One radiologist-labelled test lesion."""

    row_index: int
    text: str
    terms: tuple[str, ...]


@dataclass
class TextMinedLabels:
    """All text-mined labels, keyed by DL_info row index."""

    terms: list[str]
    by_row: dict[int, LesionTags]
    source: str = ""

    def split_rows(self, split: str) -> list[int]:
        return [r for r, t in self.by_row.items() if t.split == split]

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in TAG_SPLITS}
        for t in self.by_row.values():
            out[t.split] += 1
        return out


def _require(data: dict, key: str, path: Path) -> list:
    if key not in data:
        raise TagFileError(f"{path}: missing field {key!r}")
    value = data[key]
    if not isinstance(value, list):
        raise TagFileError(f"{path}: field {key!r} is {type(value).__name__}, expected list")
    return value


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TagFileError(f"{path}: not a JSON file ({exc})") from None


def load_text_mined(path: str | Path) -> TextMinedLabels:
    """Load ``text_mined_labels_171_and_split.json``; checks lengths and index ranges."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise TagFileError(f"{path}: expected a JSON object at the top level")
    terms = _require(data, "term_list", path)
    if len(terms) != TERM_COUNT or len(set(terms)) != TERM_COUNT:
        raise TagFileError(
            f"{path}: term_list has {len(terms)} terms "
            f"({len(set(terms))} distinct), expected {TERM_COUNT}"
        )
    by_row: dict[int, LesionTags] = {}
    for split in TAG_SPLITS:
        idxs = _require(data, f"{split}_lesion_idxs", path)
        lists: dict[str, list] = {}
        for kind in LABEL_KINDS:
            key = f"{split}_{kind}_labels"
            if key not in data:
                continue
            lists[kind] = _require(data, key, path)
            if len(lists[kind]) != len(idxs):
                raise TagFileError(
                    f"{path}: {key} has {len(lists[kind])} entries but "
                    f"{split}_lesion_idxs has {len(idxs)}"
                )
        if "relevant" not in lists:
            raise TagFileError(f"{path}: missing field '{split}_relevant_labels'")
        for pos, row in enumerate(idxs):
            if not isinstance(row, int) or row < 0:
                raise TagFileError(
                    f"{path}: {split}_lesion_idxs[{pos}] = {row!r} is not a non-negative integer"
                )
            if row in by_row:
                raise TagFileError(
                    f"{path}: lesion index {row} appears in both {by_row[row].split} and {split}"
                )
            names = {}
            for kind, values in lists.items():
                entry = values[pos]
                bad = [t for t in entry if not isinstance(t, int) or not 0 <= t < TERM_COUNT]
                if bad:
                    raise TagFileError(
                        f"{path}: {split}_{kind}_labels[{pos}] has term "
                        f"indexes outside 0..{TERM_COUNT - 1}: {bad}"
                    )
                names[kind] = frozenset(terms[t] for t in entry)
            by_row[row] = LesionTags(row, split, **names)
    return TextMinedLabels(list(terms), by_row, str(path))


def load_hand_labeled(path: str | Path) -> list[HandLabel]:
    """Load ``hand_labeled_test_set.json`` (500 radiologist-labelled lesions)."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, list):
        raise TagFileError(f"{path}: expected a JSON list of lesions")
    out = []
    for pos, item in enumerate(data):
        try:
            out.append(
                HandLabel(int(item["lesion_idx"]), str(item["text"]), tuple(item["expanded_terms"]))
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TagFileError(
                f"{path}: entry {pos} lacks lesion_idx/text/expanded_terms ({exc!r})"
            ) from None
    return out


# --------------------------------------------------------------------------- files


@dataclass
class LesaNet:
    """Everything LesaNet publishes: text-mined labels, hand labels, ontology."""

    labels: TextMinedLabels
    hand_labeled: list[HandLabel]
    ontology: Ontology | None

    def expand(self, name: str) -> set[str]:
        """A tag query -> the set of terms it matches (the term and its descendants)."""
        if self.ontology is not None:
            try:
                return self.ontology.expand(name)
            except UnknownTagError:
                pass
        by_lower = {t.lower(): t for t in self.labels.terms}
        if name.strip().lower() in by_lower:
            return {by_lower[name.strip().lower()]}
        raise UnknownTagError(
            f"unknown tag {name!r}: not one of the {len(self.labels.terms)}"
            " LesaNet terms nor an ontology term or synonym"
        )


def lesanet_dir(path: str | Path | None = None) -> Path:
    """The LesaNet ``program_data`` folder: ``path``, else ``$DEEPLESION_LESANET``."""
    if path is None:
        env = os.environ.get(LESANET_ENV)
        if not env:
            raise MissingDataError(
                f"no LesaNet folder given: pass one or set {LESANET_ENV} to the folder "
                f"holding {TEXT_MINED_FILE} (LesaNet/program_data in rsummers11/CADLab)"
            )
        path = env
    path = Path(path)
    if not (path / TEXT_MINED_FILE).is_file():
        raise MissingDataError(f"{path}: no {TEXT_MINED_FILE} in this folder")
    return path


def load_lesanet(path: str | Path | None = None, *, ontology: bool = True) -> LesaNet:
    """Load the LesaNet files from a folder (see :func:`lesanet_dir`)."""
    folder = lesanet_dir(path)
    labels = load_text_mined(folder / TEXT_MINED_FILE)
    hand = (
        load_hand_labeled(folder / HAND_LABELED_FILE)
        if (folder / HAND_LABELED_FILE).is_file()
        else []
    )
    onto = (
        load_ontology(folder / ONTOLOGY_FILE)
        if ontology and (folder / ONTOLOGY_FILE).is_file()
        else None
    )
    return LesaNet(labels, hand, onto)


# --------------------------------------------------------------------------- join


@dataclass
class TaggedTable:
    """DL_info lesions with their LesaNet tags (joined on the DL_info row index)."""

    table: LesionTable
    tags: dict[int, LesionTags]  #: row index -> tags, only rows present in the table
    hand: dict[int, HandLabel]
    official: bool
    unjoined_rows: list[int]  #: LesaNet lesion indexes with no row in the table

    def tags_of(self, lesion: Lesion | int) -> LesionTags | None:
        row = lesion if isinstance(lesion, int) else lesion.row_index
        return self.tags.get(row)

    def filter(
        self, queries: Sequence[set[str]], *, include_uncertain: bool = False
    ) -> list[Lesion]:
        """Lesions whose relevant (optionally also uncertain) terms meet every query set."""
        out = []
        for lesion in self.table.lesions:
            t = self.tags.get(lesion.row_index)
            if t is None:
                continue
            have = t.relevant | t.uncertain if include_uncertain else t.relevant
            if all(have & q for q in queries):
                out.append(lesion)
        return out


def check_official(csv_path: str | Path, *, override_fingerprint: bool = False) -> bool:
    """True if ``csv_path`` is the official DL_info.csv; raise unless overridden.

    Raises :class:`FingerprintError` naming the file and both blob ids.
    """
    blob = git_blob_id(csv_path)
    if blob == OFFICIAL_BLOB_ID:
        return True
    if override_fingerprint:
        return False
    raise FingerprintError(
        f"{csv_path}: git blob id {blob} is not the official DL_info.csv "
        f"({OFFICIAL_BLOB_ID}). LesaNet lesion indexes are row indexes of the full official "
        f"file ({OFFICIAL_ROWS} rows); in a split, excerpt or edited copy they point at the "
        "wrong lesions. Use the official file, or override the check if this file keeps "
        "the official row order."
    )


def join_tags(
    csv_path: str | Path,
    lesanet: LesaNet,
    *,
    override_fingerprint: bool = False,
    table: LesionTable | None = None,
) -> TaggedTable:
    """Attach LesaNet tags to the rows of the official DL_info.csv.

    Tags go on the row whose 0-based data row index equals LesaNet's lesion index (rows
    that fail to parse keep their index; nothing shifts). Any file other than the official
    one is refused with :class:`FingerprintError` unless ``override_fingerprint``.
    """
    official = check_official(csv_path, override_fingerprint=override_fingerprint)
    if table is None:
        table = load_lesions(csv_path)
    present = {l.row_index for l in table.lesions}
    tags = {r: t for r, t in lesanet.labels.by_row.items() if r in present}
    hand = {h.row_index: h for h in lesanet.hand_labeled if h.row_index in present}
    unjoined = sorted(set(lesanet.labels.by_row) - present)
    return TaggedTable(table, tags, hand, official, unjoined)


# --------------------------------------------------------------------------- labels


def tags_for_lesion(
    tagged: TaggedTable | None,
    lesion: Lesion,
    *,
    source: str = "text-mined",
    include_uncertain: bool = False,
) -> tuple[str, ...]:
    """A lesion's tags, sorted; empty when unknown.

    ``source``: ``"text-mined"`` (relevant, plus uncertain if asked) or ``"hand"`` (the
    radiologist's expanded terms; test lesions only).
    """
    if tagged is None:
        return ()
    if source == "hand":
        h = tagged.hand.get(lesion.row_index)
        return tuple(sorted(set(h.terms))) if h else ()
    if source != "text-mined":
        raise InvalidArgumentError(f"source must be 'text-mined' or 'hand', got {source!r}")
    t = tagged.tags_of(lesion)
    if t is None:
        return ()
    terms = t.relevant | t.uncertain if include_uncertain else t.relevant
    return tuple(sorted(terms))


def tag_label(tags: Iterable[str], ontology: Ontology | None = None, *, max_terms: int = 4) -> str:
    """Short label text for render and report: the most specific terms first.

    With an ontology, terms that are ancestors of another listed term are dropped
    ("lung" goes when "right lower lobe" is present); the rest is sorted bodypart, type,
    attribute and cut to ``max_terms``, "+N" marking the rest.
    """
    tags = sorted(set(tags))
    if ontology is not None:
        ancestors = {
            t for t in tags for other in tags if other != t and other in ontology.descendants(t)
        }
        order = {"bodypart": 0, "type": 1, "attribute": 2}
        tags = sorted(
            (t for t in tags if t not in ancestors),
            key=lambda t: (order.get(getattr(ontology.terms.get(t), "kind", ""), 3), t),
        )
    if len(tags) > max_terms:
        return ", ".join(tags[:max_terms]) + f" +{len(tags) - max_terms}"
    return ", ".join(tags)
