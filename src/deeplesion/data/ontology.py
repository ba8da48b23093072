"""The LesaNet lesion ontology (``lesion_ontology_181022.xlsx``): one row per term
(``class`` bodypart / type / attribute, ``synonyms``, ``term_exclusive``,
``term_parents``, ``term_children``; lists separated by ``|``). Needs openpyxl (extra
``[tags]``). The LesaNet label files are read by :mod:`deeplesion.data.tags`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from deeplesion.errors import DeepLesionError

ONTOLOGY_FILE = "lesion_ontology_181022.xlsx"


class TagFileError(DeepLesionError, ValueError):
    """A LesaNet file with an unexpected structure; names the file and the field."""


class MissingExtraError(DeepLesionError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class UnknownTagError(DeepLesionError, KeyError):
    """A tag that is neither a term nor a synonym in the ontology or term list."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True, slots=True)
class OntologyTerm:
    term: str
    term_id: int
    kind: str  #: bodypart, type or attribute
    synonyms: tuple[str, ...]
    exclusive: tuple[str, ...]
    parents: tuple[str, ...]
    children: tuple[str, ...]


@dataclass
class Ontology:
    """The lesion ontology. Children come from both the ``term_children`` column and the
    terms that list a term among their ``term_parents``; :meth:`descendants` is transitive."""

    terms: dict[str, OntologyTerm]
    _children: dict[str, set[str]] = field(default_factory=dict, repr=False)
    _lookup: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for t in self.terms.values():
            self._children.setdefault(t.term, set()).update(t.children)
            for parent in t.parents:
                self._children.setdefault(parent, set()).add(t.term)
        for t in self.terms.values():  # synonyms first, exact names win
            for s in t.synonyms:
                self._lookup.setdefault(s.lower(), t.term)
        for t in self.terms.values():
            self._lookup[t.term.lower()] = t.term

    def resolve(self, name: str) -> str:
        """A term or synonym (any case) -> the term; :class:`UnknownTagError` otherwise."""
        key = name.strip().lower()
        if key in self._lookup:
            return self._lookup[key]
        if key in {c.lower() for cs in self._children.values() for c in cs}:
            return next(c for cs in self._children.values() for c in cs if c.lower() == key)
        raise UnknownTagError(f"unknown tag {name!r}: not a term or synonym of the ontology")

    def children(self, term: str) -> set[str]:
        return set(self._children.get(term, ()))

    def descendants(self, term: str) -> set[str]:
        """All terms below ``term`` (children, their children, ...)."""
        out: set[str] = set()
        stack = list(self.children(term))
        while stack:
            t = stack.pop()
            if t not in out:
                out.add(t)
                stack.extend(self.children(t))
        out.discard(term)
        return out

    def expand(self, name: str) -> set[str]:
        """The term named by ``name`` (or a synonym) and all its descendants."""
        term = self.resolve(name)
        return {term} | self.descendants(term)


def _split_bar(value: object) -> tuple[str, ...]:
    if value is None or (isinstance(value, float) and value != value):
        return ()
    return tuple(t.strip() for t in str(value).split("|") if t.strip())


def load_ontology(path: str | Path) -> Ontology:
    """Load ``lesion_ontology_181022.xlsx`` (needs openpyxl: ``pip install deeplesion[tags]``)."""
    import importlib

    import pandas as pd

    path = Path(path)
    try:
        importlib.import_module("openpyxl")  # pandas reads .xlsx through it
    except ImportError as exc:
        raise MissingExtraError(
            f"{path}: reading the LesaNet ontology needs openpyxl, "
            'not installed: pip install "deeplesion[tags]"'
        ) from exc
    frame = pd.read_excel(path, engine="openpyxl")
    needed = ["id", "class", "term", "synonyms", "term_exclusive", "term_parents", "term_children"]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise TagFileError(f"{path}: missing columns {missing}")
    terms: dict[str, OntologyTerm] = {}
    for line, row in enumerate(frame.to_dict("records"), start=2):
        term = str(row["term"]).strip()
        if term in terms:
            raise TagFileError(f"{path}: line {line}: term {term!r} appears twice")
        terms[term] = OntologyTerm(
            term,
            int(row["id"]),
            str(row["class"]),
            _split_bar(row["synonyms"]),
            _split_bar(row["term_exclusive"]),
            _split_bar(row["term_parents"]),
            _split_bar(row["term_children"]),
        )
    return Ontology(terms)
