"""Typed errors of the evaluation package."""

from __future__ import annotations

from deeplesion.errors import CellError, DeepLesionError


class PredictionError(CellError):
    """A prediction (or label / measurement) file row that cannot be used."""


class EvaluationError(DeepLesionError, ValueError):
    """Inputs that cannot be evaluated together (e.g. an empty split, mismatched arrays)."""
