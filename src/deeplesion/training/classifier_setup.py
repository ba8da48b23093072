"""What a classifier run is made of: the model, its settings and its labelled patches.

Used by :mod:`deeplesion.training.classifier` (training, checkpoints, prediction), which
re-exports these names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from deeplesion.data.annotations import LESION_TYPES, Lesion
from deeplesion.errors import DeepLesionError
from deeplesion.training.datasets import LesionPatchDataset
from deeplesion.training.runs import check_fields

ARCHS = ("resnet18", "tiny")
TARGETS = ("type", "tags")
TYPE_CODES = tuple(code for code in LESION_TYPES if code > 0)
TYPE_NAMES = tuple(LESION_TYPES[c] for c in TYPE_CODES)
#: Patches are windowed to 0..255 (minus the preset's offset); the network sees value / 255.
INPUT_SCALE = 1.0 / 255.0


class ClassifierError(DeepLesionError, ValueError):
    """A classifier configuration, label set or checkpoint that cannot be used."""


@dataclass(frozen=True)
class TagTargets:
    """Tag labels by DL_info row index (LesaNet's lesion index): term indexes per lesion."""

    terms: tuple[str, ...]
    relevant: Mapping[int, Sequence[int]]
    uncertain: Mapping[int, Sequence[int]]
    split: Mapping[int, str]  #: LesaNet's split of each labelled lesion

    @classmethod
    def from_lesanet(cls, labels) -> TagTargets:
        """From :class:`deeplesion.data.tags.TextMinedLabels`."""
        index = {t: i for i, t in enumerate(labels.terms)}
        by_row = labels.by_row.items()
        return cls(
            tuple(labels.terms),
            {r: sorted(index[t] for t in x.relevant) for r, x in by_row},
            {r: sorted(index[t] for t in x.uncertain) for r, x in by_row},
            {r: x.split for r, x in by_row},
        )


# --------------------------------------------------------------------------- model


def build_classifier(
    in_channels: int, n_outputs: int, *, arch: str = "resnet18", pretrained: bool = False
) -> nn.Module:
    """A classifier of ``in_channels``-slice patches with ``n_outputs`` logits."""
    if arch == "resnet18":
        from torchvision.models import ResNet18_Weights, resnet18

        model = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1 if pretrained else None)
        old = model.conv1
        if in_channels != 3:
            new = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            if pretrained:  # spread the RGB filters over the slices
                with torch.no_grad():
                    new.weight.copy_(
                        old.weight.mean(1, keepdim=True).repeat(1, in_channels, 1, 1)
                        * 3.0
                        / in_channels
                    )
            model.conv1 = new
        model.fc = nn.Linear(model.fc.in_features, n_outputs)
        return model
    if arch == "tiny":

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        return nn.Sequential(
            *block(in_channels, 16),
            *block(16, 32),
            *block(32, 64),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, n_outputs),
        )
    raise ClassifierError(f"unknown arch {arch!r}; allowed: {', '.join(ARCHS)}")


# --------------------------------------------------------------------------- config


@dataclass
class ClassifierConfig:
    """Everything that defines a classifier run (stored in each checkpoint)."""

    target: str = "type"  #: 'type' (8 coarse types) or 'tags' (LesaNet, multi-label)
    preset: str = "lesanet"
    overrides: dict = field(default_factory=dict)  #: preprocessing fields to replace
    arch: str = "resnet18"
    pretrained: bool = False  #: ImageNet weights (downloads them)
    patch_px: int = 64
    padding_px: int = 16  #: context around the lesion box, in prepared-image pixels
    epochs: int = 10
    batch_size: int = 16
    iterations_per_epoch: int | None = None  #: None: one pass over the training lesions
    lr: float = 1e-3  #: AdamW
    weight_decay: float = 1e-4
    val_fraction: float = 0.2  #: types: share of labelled patients held out
    augment: bool = True  #: the preset's augmentation (none for 'lesanet')
    shuffle_labels: bool = False  #: sanity check: permute training labels (seeded)
    include_noisy: bool = False
    cache: bool = False  #: keep un-augmented patches in memory
    seed: int = 0
    num_workers: int = 0
    device: str = "cpu"
    checkpoint_every: int = 50

    def check(self) -> None:
        """Raise :class:`ClassifierError` naming the first unusable field."""
        minimum = {"patch_px": 8, "padding_px": 0, "epochs": 1, "batch_size": 1}
        check_fields(self, {**minimum, "num_workers": 0, "checkpoint_every": 0}, ClassifierError)
        if not (0 <= self.val_fraction < 1):
            raise ClassifierError(f"val_fraction={self.val_fraction!r}: expected 0 <= f < 1")
        if self.target not in TARGETS:
            raise ClassifierError(
                f"target must be one of {', '.join(TARGETS)}, got {self.target!r}"
            )
        if self.arch not in ARCHS:
            raise ClassifierError(f"unknown arch {self.arch!r}; allowed: {', '.join(ARCHS)}")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> ClassifierConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# --------------------------------------------------------------------------- data


def patient_split(
    lesions: Sequence[Lesion], val_fraction: float, seed: int
) -> tuple[list[Lesion], list[Lesion]]:
    """``(train, val)``: a seeded ``val_fraction`` of the patients (at least one when the
    fraction is > 0 and there are two or more patients) goes to val, with all its lesions."""
    patients = sorted({l.patient_index for l in lesions})
    n_val = round(len(patients) * val_fraction)
    if val_fraction > 0 and len(patients) >= 2:
        n_val = min(max(n_val, 1), len(patients) - 1)
    order = np.random.default_rng(seed).permutation(len(patients))
    held = {patients[i] for i in order[:n_val]}
    return [l for l in lesions if l.patient_index not in held], [
        l for l in lesions if l.patient_index in held
    ]


class PatchTargets(Dataset):
    """Patches with the classifier's target: a class index (types) or a multi-hot vector
    and a mask (tags; False where the label is uncertain)."""

    def __init__(
        self,
        patches: LesionPatchDataset,
        config: ClassifierConfig,
        tags: TagTargets | None = None,
        *,
        shuffle: bool = False,
    ) -> None:
        self.patches = patches
        self.tags = tags
        self.cache = config.cache and not (patches.train and patches.params.augmentation.active)
        self._cache: dict[int, torch.Tensor] = {}
        lesions = patches.lesions
        if tags is None:
            labels = np.array([TYPE_CODES.index(l.coarse_type) for l in lesions], dtype=np.int64)
        else:
            labels = np.arange(len(lesions), dtype=np.int64)  # index of the lesion's tags
        if shuffle:
            labels = labels[np.random.default_rng((config.seed, 7)).permutation(len(labels))]
        self.labels = labels

    def __len__(self) -> int:
        return len(self.patches)

    def set_epoch(self, epoch: int) -> None:
        self.patches.set_epoch(epoch)

    def __getitem__(self, index: int):
        if index in self._cache:
            patch = self._cache[index]
        else:
            patch = self.patches[index][0]
            if self.cache:
                self._cache[index] = patch
        return patch, self.target(index)

    def target(self, index: int) -> int | torch.Tensor:
        """Item ``index``'s target (no patch read): its class index, or for tags the
        (2, n_tags) stack of the multi-hot labels and the mask."""
        if self.tags is None:
            return int(self.labels[index])
        row = self.patches.lesions[int(self.labels[index])].row_index
        n = len(self.tags.terms)
        target, mask = torch.zeros(n), torch.ones(n)
        target[list(self.tags.relevant.get(row, ()))] = 1.0
        mask[list(self.tags.uncertain.get(row, ()))] = 0.0
        return torch.stack([target, mask])


def _patches(
    root: Path, config: ClassifierConfig, lesions, params, *, train: bool, store=None
) -> LesionPatchDataset:
    return LesionPatchDataset(
        root,
        None,
        preset=params,
        overrides=None if not isinstance(params, str) else config.overrides,
        lesions=lesions,
        padding_px=config.padding_px,
        patch_px=config.patch_px,
        include_noisy=True,  # selection already made
        train=train,
        seed=config.seed,
        store=store,
    )


def training_lesions(
    lesions: Sequence[Lesion], config: ClassifierConfig, tags: TagTargets | None
) -> tuple[list[Lesion], list[Lesion], str]:
    """``(train, val, statement)``: the lesions each side uses and a sentence saying how."""
    pool = [l for l in lesions if config.include_noisy or not l.possibly_noisy]
    if config.target == "type":
        labelled = [l for l in pool if l.coarse_type > 0]
        if not labelled:
            raise ClassifierError(
                "no lesion with a coarse type: only val and test rows of DL_info.csv carry one"
            )
        train, val = patient_split(labelled, config.val_fraction, config.seed)
        n_train_p = len({l.patient_index for l in train})
        n_val_p = len({l.patient_index for l in val})
        statement = (
            f"patient-level split of the {len(labelled)} lesions with a type: "
            f"{len(train)} lesions of {n_train_p} patients train, {len(val)} lesions of "
            f"{n_val_p} patients validate (seed {config.seed}, val_fraction "
            f"{config.val_fraction:g}); no patient is on both sides"
        )
        return train, val, statement
    if tags is None:
        raise ClassifierError("target 'tags' needs the LesaNet labels")
    train = [l for l in pool if tags.split.get(l.row_index) == "train"]
    val = [l for l in pool if tags.split.get(l.row_index) == "val"]
    if not train:
        raise ClassifierError("no lesion of the annotations is in LesaNet's train list")
    statement = (
        f"LesaNet's split (patient-level, from DL_info): {len(train)} train and {len(val)} "
        "val lesions with tags; uncertain labels are left out of the loss"
    )
    return train, val, statement
