"""What every training run shares: its settings checks, its checkpoints and its resume.

A :class:`RunKind` names one trainer's checkpoints (the detector's, the classifier's): the
config record stored in them, the keys they must hold and the error raised for one that
cannot be used. Checkpoints hold plain containers and tensors only, are written to a
temporary name and renamed (:func:`save_checkpoint`) and read with PyTorch's weights-only
loader. A run folder with ``last.pt`` resumes with the saved config (:meth:`RunKind.start`;
a larger ``epochs`` extends it) and :func:`resume_differences` names what a resumed run
ignores of the settings it was given.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from deeplesion.data.io import atomic_path
from deeplesion.training.presets import preset as get_preset
from deeplesion.training.settings import (
    PreprocessError,
    Preprocessing,
    coerce_override,
    from_description,
)

#: The unpickler's errors on a file that is not a checkpoint (it raises many kinds).
_UNREADABLE = (
    pickle.UnpicklingError,
    RuntimeError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    ImportError,
    IndexError,
    KeyError,
)


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` under a temporary name, then rename it."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def check_fields(config: Any, minimum: Mapping[str, int], error: type[Exception]) -> None:
    """Raise ``error`` naming the first unusable field of a run's config: the integers of
    ``minimum`` (with their lowest value), ``iterations_per_epoch`` (>= 1 or None), ``lr``
    (> 0) and ``weight_decay`` (>= 0)."""
    for name, low in minimum.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise error(f"{name}={value!r}: expected an integer >= {low}")
    per_epoch = config.iterations_per_epoch
    if per_epoch is not None and (
        isinstance(per_epoch, bool) or not isinstance(per_epoch, int) or per_epoch < 1
    ):
        raise error(f"iterations_per_epoch={per_epoch!r}: expected an integer >= 1 or None")
    for name in ("lr", "weight_decay"):
        value = getattr(config, name)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
            or (name == "lr" and value == 0)
        ):
            raise error(f"{name}={value!r}: expected a number {'> 0' if name == 'lr' else '>= 0'}")


@dataclass(frozen=True)
class RunKind:
    """One trainer's checkpoints: ``config`` has ``check()``, ``to_json()``,
    ``from_json()`` and the fields ``epochs``, ``device``, ``preset`` and ``overrides``."""

    name: str  #: in messages, e.g. "deeplesion checkpoint"
    config: Any  #: the config class
    error: type[Exception]
    keys: tuple[str, ...]  #: every checkpoint of this kind holds them
    check_device: Callable[[str, type[Exception]], object]

    def load(self, path: Path) -> dict:
        """The checkpoint at ``path``, or ``error`` saying why it is not one."""
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except OSError as exc:
            raise self.error(f"{path}: cannot read checkpoint: {exc}") from exc
        except _UNREADABLE as exc:
            raise self.error(
                f"{path}: not a {self.name} (PyTorch cannot read it as one: {type(exc).__name__})"
            ) from exc
        if not isinstance(ckpt, dict) or any(k not in ckpt for k in self.keys):
            raise self.error(
                f"{path}: not a {self.name} (expected a dict with {', '.join(self.keys)})"
            )
        return ckpt

    def config_of(self, ckpt: dict, path: Path) -> Any:
        """The config stored in ``ckpt`` (read from ``path``)."""
        try:
            return self.config.from_json(ckpt["config"])
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise self.error(f"{path}: not a {self.name}: {exc}") from exc

    def saved(self, out_dir: str | Path) -> tuple[Any, Preprocessing] | None:
        """The config and preprocessing a run in ``out_dir`` resumes with (``None`` when it
        has no ``last.pt``)."""
        path = Path(out_dir) / "last.pt"
        if not path.is_file():
            return None
        ckpt = self.load(path)
        config = self.config_of(ckpt, path)
        try:
            return config, from_description(ckpt["preprocessing"])
        except (TypeError, ValueError, KeyError) as exc:
            raise self.error(f"{path}: not a {self.name}: {exc}") from exc

    def start(self, out_dir: Path, config: Any | None) -> tuple[Any, dict | None]:
        """The checked config of a run in ``out_dir`` and its ``last.pt`` (``None``: a new
        run). A run with ``last.pt`` keeps its saved config; only a larger
        ``config.epochs`` extends it."""
        last_path = out_dir / "last.pt"
        state = self.load(last_path) if last_path.is_file() else None
        if state is not None:
            saved = self.config_of(state, last_path)
            if config is not None:
                config.check()
                saved.epochs = max(saved.epochs, config.epochs)
            config = saved
        config = config or self.config()
        config.check()
        self.check_device(config.device, self.error)
        try:
            get_preset(config.preset, **dict(config.overrides))
        except PreprocessError as exc:
            raise self.error(f"preprocessing of the run: {exc}") from exc
        return config, state


def resume_differences(
    saved: Any, saved_params: Preprocessing, requested: Any, names: Iterable[str]
) -> list[tuple[str, object, object]]:
    """``(field, requested, saved)`` for each field in ``names`` that a resumed run ignores.

    ``saved`` and ``requested`` are configs of one kind; ``names`` are the fields the
    caller set; each key of ``requested.overrides`` is compared with the saved
    preprocessing (``preset`` by name). ``epochs`` only counts when it is below the saved
    number (a larger one extends the run).
    """
    out: list[tuple[str, object, object]] = []
    for name in names:
        if name == "overrides":
            continue
        new, old = getattr(requested, name), getattr(saved, name)
        if name == "epochs":
            if new < old:
                out.append((name, new, old))
        elif name == "preset":
            if str(new).strip().lower() != str(old).strip().lower():
                out.append((name, new, old))
        elif (tuple(new) if isinstance(new, (list, tuple)) else new) != (
            tuple(old) if isinstance(old, (list, tuple)) else old
        ):
            out.append((name, new, old))
    for key, value in requested.overrides.items():
        value = coerce_override(key, value)
        if key == "images":
            key, value = "n_slices", 3 * value  # type: ignore[operator]
        if key in {f.name for f in fields(Preprocessing)}:
            old = getattr(saved_params, key)
        else:
            old = getattr(saved_params.augmentation, key)
        if value != old:
            out.append((f"overrides.{key}", value, old))
    return out
