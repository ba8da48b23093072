"""PyTorch datasets over a DeepLesion root (needs the ``[torch]`` extra).

- :class:`KeySliceDetectionDataset`: one sample per key slice: the image with its context
  slices as channels and a torchvision-style target (boxes 0-based x1, y1, x2, y2 in the
  returned image's pixels, labels, lesion ids, spacing, the transform back to DL_info).
- :class:`LesionPatchDataset`: one sample per lesion: a patch around it for
  classification (coarse type, optional tags) with its weak RECIST mask.

Both take ``store=OUT`` to read the slices from a training store (``deeplesion store``)
instead of the PNGs: the tensors are the same, no PNG is decoded.

Both hold only paths and lesion records (files are opened in ``__getitem__``), keep no
global state and draw augmentation from ``numpy.random.default_rng((seed, epoch, index))``,
so they work in DataLoader workers and give the same samples for the same seed.

Example::

    ds = KeySliceDetectionDataset("DeepLesion", split="val", preset="3dce")
    image, target = ds[0]          # image: float32 (9, H, W); target["boxes"]: (n, 4)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from deeplesion.data.annotations import Lesion, LesionTable, load_lesions
from deeplesion.data.sources import PngSource, SliceSource
from deeplesion.data.store import open_store
from deeplesion.errors import DeepLesionError
from deeplesion.training.imageops import recist_mask, resize_bilinear
from deeplesion.training.pipeline import PreparedSlice, prepare_lesion_image
from deeplesion.training.presets import preset
from deeplesion.training.settings import Preprocessing

#: Label of every lesion box (0 is the background class in torchvision detectors).
LESION_LABEL = 1


class DatasetError(DeepLesionError, ValueError):
    """A dataset that cannot be built (no lesions, unknown split, bad arguments)."""


def _resolve_params(
    params: Preprocessing | str, overrides: Mapping[str, object] | None
) -> Preprocessing:
    if isinstance(params, str):
        return preset(params, **dict(overrides or {}))
    return params.with_overrides(**dict(overrides or {})) if overrides else params


def _load_table(
    root: Path, lesions: LesionTable | Sequence[Lesion] | str | Path | None
) -> tuple[list[Lesion], str]:
    """The lesions and where they came from (for messages)."""
    if lesions is None:
        lesions = root / "DL_info.csv"
    if isinstance(lesions, (str, Path)):
        return list(load_lesions(lesions).lesions), str(lesions)
    if isinstance(lesions, LesionTable):
        return list(lesions.lesions), str(lesions.source)
    return list(lesions), "the given lesions"


def _select(lesions: list[Lesion], split: str | None, include_noisy: bool) -> list[Lesion]:
    from deeplesion.data.annotations import split_code

    if split not in (None, "all"):
        try:
            code = split_code(split)
        except ValueError as exc:
            raise DatasetError(str(exc)) from None
        lesions = [l for l in lesions if l.split_code == code]
    if not include_noisy:
        lesions = [l for l in lesions if not l.possibly_noisy]
    return lesions


class _Base(Dataset):
    def __init__(
        self,
        root: str | Path,
        split: str | None,
        preset: Preprocessing | str,
        overrides: Mapping[str, object] | None,
        lesions,
        include_noisy: bool,
        train: bool,
        seed: int,
        store: str | Path | None,
    ) -> None:
        """What both datasets share (the rows, their preprocessing, where slices are read),
        given in the order of the datasets' own keyword arguments."""
        self.root = Path(root)
        #: Where slices are read from: the PNGs under ``root``, or the store ``store``
        #: (built by ``deeplesion store``; then no PNG is opened).
        self.source: SliceSource = PngSource(self.root) if store is None else open_store(store)
        self.params = _resolve_params(preset, overrides)
        self.split = split
        self.train = train
        self.seed = int(seed)
        self.epoch = 0
        table, source = _load_table(self.root, lesions)
        self.lesions = _select(table, split, include_noisy)
        if not self.lesions:
            held = sorted({l.split for l in table})
            raise DatasetError(
                f"no lesions in split {split!r} of {source}"
                + ("" if include_noisy else " (noisy lesions excluded)")
                + (f"; it holds: {', '.join(held)}" if held else "; it holds no lesions")
            )

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draws (call once per epoch before iterating).

        DataLoader workers hold copies of the dataset: with ``persistent_workers=True``
        this call does not reach them; build a new DataLoader per epoch instead.
        """
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator | None:
        if not (self.train and self.params.augmentation.active):
            return None
        return np.random.default_rng((self.seed, self.epoch, int(index)))


class KeySliceDetectionDataset(_Base):
    """Key slices with their lesions, for detection.

    ``preset``: a :class:`Preprocessing` or preset name (see
    ``deeplesion.training.presets.PREPROCESSING_PRESETS``); ``overrides`` replaces any of
    its fields (values checked against the field types). The preset's augmentation is
    applied only with ``train=True``. ``masks=True`` adds the weak RECIST masks (n, H, W)
    to the target.
    ``cache=True`` keeps un-augmented samples in memory (per worker) after the first read.
    ``store=OUT`` reads the slices from a store built by ``deeplesion store`` (same tensors).
    Noisy lesions are left out unless ``include_noisy``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = "train",
        *,
        preset: Preprocessing | str = "3dce",
        overrides: Mapping[str, object] | None = None,
        lesions: LesionTable | Sequence[Lesion] | str | Path | None = None,
        include_noisy: bool = False,
        train: bool = False,
        masks: bool = False,
        cache: bool = False,
        seed: int = 0,
        store: str | Path | None = None,
    ) -> None:
        super().__init__(root, split, preset, overrides, lesions, include_noisy, train, seed, store)
        self.masks = masks
        self.cache = cache
        self._cache: dict[int, PreparedSlice] = {}
        groups: dict[str, list[Lesion]] = {}
        for lesion in self.lesions:
            groups.setdefault(lesion.file_name, []).append(lesion)
        self.file_names = list(groups)
        self.groups = [groups[name] for name in self.file_names]

    def __len__(self) -> int:
        return len(self.groups)

    @property
    def in_channels(self) -> int:
        return self.params.n_slices

    def prepare(self, index: int) -> PreparedSlice:
        """The numpy image and transform of sample ``index`` (no torch conversion)."""
        rng = self._rng(index)
        if rng is None and index in self._cache:
            return self._cache[index]
        prepared = prepare_lesion_image(self.source, self.groups[index][0], self.params, rng=rng)
        if rng is None and self.cache:
            self._cache[index] = prepared
        return prepared

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        lesions = self.groups[index]
        prepared = self.prepare(index)
        rows, cols = prepared.transform.size
        boxes = prepared.lesion_boxes(lesions)
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, cols - 1)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, rows - 1)
        first = lesions[0]
        target: dict[str, Any] = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.full((len(lesions),), LESION_LABEL, dtype=torch.int64),
            "coarse_types": torch.tensor([l.coarse_type for l in lesions], dtype=torch.int64),
            "lesion_ids": torch.tensor([l.row_index for l in lesions], dtype=torch.int64),
            "recist": torch.from_numpy(prepared.lesion_recist(lesions)),
            "image_id": index,
            "file_name": first.file_name,
            "spacing_mm": first.spacing_mm[0] / prepared.transform.scale,
            "slice_interval_mm": first.slice_interval_mm,
            "scale": prepared.transform.scale,
            "crop_px0": prepared.transform.crop_px0,
            "transform": prepared.transform,
        }
        if self.masks:
            recist = target["recist"].numpy()
            target["masks"] = torch.from_numpy(
                np.stack([recist_mask(r, (rows, cols)) for r in recist]).astype(np.uint8)
            )
        return torch.from_numpy(prepared.image), target


class LesionPatchDataset(_Base):
    """One patch per lesion, for classification and weak segmentation.

    The patch is a square around the lesion box in the prepared image (default preset
    ``lesanet``: 1 mm/pixel, 3 slices at 2 mm), ``padding_px`` wider than the box's longer
    side on each side (outside the image: the window's lowest value), resized to
    ``patch_px`` x ``patch_px``. Target: ``coarse_type`` (-1 = unlabelled),
    ``tags`` (multi-hot of ``n_tags`` from ``tags[row_index]`` when given, LesaNet's
    0-based lesion index), ``mask`` (the RECIST ellipse in the patch), ``lesion_id``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = "train",
        *,
        preset: Preprocessing | str = "lesanet",
        overrides: Mapping[str, object] | None = None,
        lesions: LesionTable | Sequence[Lesion] | str | Path | None = None,
        tags: Mapping[int, Sequence[int]] | None = None,
        n_tags: int | None = None,
        padding_px: int = 60,
        patch_px: int = 128,
        labelled_only: bool = False,
        include_noisy: bool = False,
        train: bool = False,
        seed: int = 0,
        store: str | Path | None = None,
    ) -> None:
        super().__init__(root, split, preset, overrides, lesions, include_noisy, train, seed, store)
        if labelled_only:
            self.lesions = [l for l in self.lesions if l.coarse_type > 0]
        if tags is not None and n_tags is None:
            n_tags = 1 + max((max(t) for t in tags.values() if len(t)), default=-1)
        self.tags = dict(tags) if tags is not None else None
        self.n_tags = n_tags or 0
        self.padding_px = int(padding_px)
        self.patch_px = int(patch_px)

    def __len__(self) -> int:
        return len(self.lesions)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        lesion = self.lesions[index]
        prepared = prepare_lesion_image(self.source, lesion, self.params, rng=self._rng(index))
        rows, cols = prepared.transform.size
        x1, y1, x2, y2 = (float(v) for v in prepared.lesion_boxes([lesion])[0])
        side = int(np.ceil(max(x2 - x1, y2 - y1))) + 1 + 2 * self.padding_px
        c0 = int(np.floor((x1 + x2) / 2 - (side - 1) / 2))
        r0 = int(np.floor((y1 + y2) / 2 - (side - 1) / 2))
        fill = np.float32(-self.params.offset)
        patch = np.full((prepared.image.shape[0], side, side), fill, dtype=np.float32)
        sr0, sr1 = max(r0, 0), min(r0 + side, rows)
        sc0, sc1 = max(c0, 0), min(c0 + side, cols)
        if sr1 > sr0 and sc1 > sc0:
            patch[:, sr0 - r0 : sr1 - r0, sc0 - c0 : sc1 - c0] = prepared.image[:, sr0:sr1, sc0:sc1]
        recist = prepared.lesion_recist([lesion])[0] - np.array([c0, r0], np.float32)
        factor = self.patch_px / side
        patch = resize_bilinear(patch, factor)
        recist = (recist + 0.5) * factor - 0.5
        mask = recist_mask(recist, patch.shape[1:])
        tags = torch.zeros(self.n_tags, dtype=torch.float32)
        if self.tags is not None:
            for t in self.tags.get(lesion.row_index, ()):
                tags[int(t)] = 1.0
        target = {
            "coarse_type": int(lesion.coarse_type),
            "tags": tags,
            "mask": torch.from_numpy(mask.astype(np.uint8)),
            "recist": torch.from_numpy(recist.astype(np.float32)),
            "lesion_id": lesion.row_index,
            "file_name": lesion.file_name,
            "spacing_mm": lesion.spacing_mm[0] / (prepared.transform.scale * factor),
        }
        return torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32)), target


def collate_detection(
    batch: Sequence[tuple[torch.Tensor, dict]],
) -> tuple[list[torch.Tensor], list[dict]]:
    """DataLoader ``collate_fn`` for detection: lists of images and targets (sizes vary)."""
    images, targets = zip(*batch)
    return list(images), list(targets)
