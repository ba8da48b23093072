"""Baseline lesion detector: training and prediction (the network: :mod:`.detector_model`).

- :func:`train_detector`: :func:`~deeplesion.training.loop.run_epochs` with the detector's
  loss, learning-rate schedule (warm-up, drops) and validation FROC after each epoch
  (``deeplesion.evaluation``); ``best.pt`` kept by average sensitivity (0.5, 1, 2, 4 FPs
  per image); atomic checkpoints, resume, torchrun as the loop does them.
- :func:`detect`: predictions CSV ``file_name,x1,y1,x2,y2,score`` in 1-based DL_info
  pixels, the format ``deeplesion evaluate detection`` reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from deeplesion.data.annotations import Lesion, LesionTable, index_to_px1
from deeplesion.training.datasets import KeySliceDetectionDataset, collate_detection
from deeplesion.training.detector_model import (
    ARCHS,
    LESION_ANCHORS,
    DetectorError,
    TinyBackbone,
    build_detector,
    check_device,
)
from deeplesion.training.distributed import Workers, join
from deeplesion.training.loop import Progress, Training, Validation, run_epochs
from deeplesion.training.runs import RunKind, check_fields, resume_differences
from deeplesion.training.settings import Preprocessing, describe, from_description

__all__ = [
    "ARCHS",
    "LESION_ANCHORS",
    "DetectorError",
    "TinyBackbone",
    "TrainConfig",
    "TrainResult",
    "build_detector",
    "check_device",
    "detect",
    "froc_of",
    "load_detector",
    "predict",
    "resume_differences",
    "saved_run",
    "train_detector",
]


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in each checkpoint)."""

    preset: str = "mulan"
    overrides: dict = field(default_factory=dict)  #: preprocessing fields to replace
    arch: str = "fasterrcnn_resnet50_fpn_v2"
    anchor_sizes: tuple = LESION_ANCHORS
    pretrained_backbone: bool = False
    epochs: int = 8
    batch_size: int = 2
    iterations_per_epoch: int | None = None  #: None: one pass over the training images
    optimizer: str = "sgd"  #: 'sgd' (momentum 0.9) or 'adamw'
    lr: float = 0.01
    weight_decay: float = 1e-4
    warmup_iterations: int = 100
    lr_drop_epochs: tuple = ()  #: epochs at whose start the learning rate is divided by 10
    train_split: str | None = "train"  #: None / 'all': every row
    val_split: str | None = "val"  #: None: no validation
    augment: bool = True
    include_noisy: bool = False
    seed: int = 0
    num_workers: int = 0
    device: str = "cpu"
    checkpoint_every: int = 50  #: iterations between mid-epoch checkpoints
    cache: bool = False  #: keep un-augmented prepared images in memory

    def check(self) -> None:
        """Raise :class:`DetectorError` naming the first field with an unusable value."""
        minimum = {"epochs": 1, "batch_size": 1, "warmup_iterations": 0}
        check_fields(self, {**minimum, "num_workers": 0, "checkpoint_every": 0}, DetectorError)
        if self.optimizer not in ("sgd", "adamw"):
            raise DetectorError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.arch not in ARCHS:
            raise DetectorError(f"unknown arch {self.arch!r}; allowed: {ARCHS}")

    def to_json(self) -> dict:
        out = asdict(self)
        out["anchor_sizes"] = list(self.anchor_sizes)
        out["lr_drop_epochs"] = list(self.lr_drop_epochs)
        return out

    @classmethod
    def from_json(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        for key in ("anchor_sizes", "lr_drop_epochs"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


@dataclass
class TrainResult:
    out_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    history: list[dict]
    finished: bool  #: False when stopped early (``stop_after``)


def _dataset(
    root: Path,
    config: TrainConfig,
    split: str | None,
    lesions,
    *,
    train: bool,
    include_noisy: bool | None = None,
    preprocessing: dict | None = None,
    store: str | Path | None = None,
) -> KeySliceDetectionDataset:
    params = from_description(preprocessing) if preprocessing is not None else config.preset
    return KeySliceDetectionDataset(
        root,
        split,
        preset=params,
        overrides=None if preprocessing is not None else config.overrides,
        lesions=lesions,
        train=train,
        seed=config.seed,
        cache=config.cache,
        include_noisy=config.include_noisy if include_noisy is None else include_noisy,
        store=store,
    )


def _lr_at(config: TrainConfig, step: int, epoch: int) -> float:
    lr = config.lr * 0.1 ** sum(1 for e in config.lr_drop_epochs if epoch >= e)
    if config.warmup_iterations > 0 and step < config.warmup_iterations:
        lr *= (step + 1) / config.warmup_iterations
    return lr


#: The detector's checkpoints (``train-detector``'s ``last.pt`` and ``best.pt``).
DETECTOR_RUN = RunKind(
    name="deeplesion checkpoint",
    config=TrainConfig,
    error=DetectorError,
    keys=("model", "config", "preprocessing", "in_channels"),
    check_device=check_device,
)


def saved_run(out_dir: str | Path) -> tuple[TrainConfig, Preprocessing] | None:
    """The settings a run in ``out_dir`` resumes with (``None`` when it has no last.pt)."""
    return DETECTOR_RUN.saved(out_dir)


def predict(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 2,
    device: str = "cpu",
    num_workers: int = 0,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Run ``model`` on every image; boxes mapped back to 1-based DL_info pixels."""
    model.eval()
    names: list[str] = []
    boxes: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate_detection,
        num_workers=num_workers,
    )
    done = 0
    with torch.no_grad():
        for images, targets in loader:
            outputs = model([im.to(device) for im in images])
            for out, target in zip(outputs, targets):
                b = out["boxes"].cpu().numpy().astype(np.float64)
                px1 = index_to_px1(target["transform"].boxes_from_image(b))
                names += [target["file_name"]] * len(px1)
                boxes.append(px1)
                scores.append(out["scores"].cpu().numpy().astype(np.float64))
            done += len(images)
            if progress is not None:
                progress(done)
    return (
        names,
        np.concatenate(boxes).reshape(-1, 4) if boxes else np.zeros((0, 4)),
        np.concatenate(scores) if scores else np.zeros(0),
    )


def froc_of(
    lesions: Sequence[Lesion], names: Sequence[str], boxes_px1: np.ndarray, scores: np.ndarray
):
    """The protocol's FROC of predictions on ``lesions`` (a DetectionResult)."""
    from deeplesion.evaluation.froc import Detections, evaluate_detection, ground_truth

    gt = ground_truth(list(lesions), None)
    index = gt.index_of()
    keep = [i for i, n in enumerate(names) if n in index]
    dets = Detections.from_arrays(
        [index[names[i]] for i in keep],
        np.asarray(boxes_px1).reshape(-1, 4)[keep],
        np.asarray(scores)[keep],
    )
    return evaluate_detection(gt, dets)


def train_detector(
    root: str | Path,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    lesions: LesionTable | Sequence[Lesion] | str | Path | None = None,
    progress: Progress | None = None,
    stop_after: int | None = None,
    store: str | Path | None = None,
) -> TrainResult:
    """Train (or resume) a detector in ``out_dir``.

    ``store``: read the slices from this training store (``deeplesion store``) instead of
    ``root``'s PNGs (same samples; not saved in the checkpoint, so a resumed run may use
    either).

    When ``out_dir/last.pt`` exists the run resumes from it with the checkpoint's config
    (a larger ``config.epochs`` extends it; other fields of ``config`` are ignored, see
    :func:`resume_differences`). ``stop_after`` stops after that many iterations in total
    (as a kill would, after saving ``last.pt``). ``progress(done, total, info)`` is called
    after each iteration (``info['loss']``) and after each validation (``info['val']``).

    Under ``torchrun --nproc_per_node N`` the N processes train one model together
    (DistributedDataParallel; ``batch_size`` per process, each process a disjoint part of
    every epoch): rank 0 alone writes checkpoints and calls ``progress``; the validation
    images are split over the ranks and the FROC is computed once, on rank 0.
    """
    root, out_dir = Path(root), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config, state = DETECTOR_RUN.start(out_dir, config)
    workers = join(config.device)
    try:
        training = _training(root, config, state is None, workers, lesions, store)
        done = run_epochs(
            training, config, out_dir, state, workers, progress=progress, stop_after=stop_after
        )
    finally:
        workers.leave()
    best_path = out_dir / "best.pt"
    best = best_path if done.finished or best_path.is_file() else None
    return TrainResult(out_dir, out_dir / "last.pt", best, done.history, done.finished)


def _training(
    root: Path,
    config: TrainConfig,
    new_run: bool,
    workers: Workers,
    lesions: LesionTable | Sequence[Lesion] | str | Path | None,
    store: str | Path | None,
) -> Training:
    """The detector's datasets, network, optimiser, loss and validation for the loop."""
    device = workers.device(config.device)
    train_ds = _dataset(
        root, config, config.train_split, lesions, train=config.augment, store=store
    )
    val_ds = None
    if config.val_split is not None:
        val_ds = _dataset(root, config, config.val_split, lesions, train=False, store=store)
    torch.manual_seed(config.seed)  # same initial weights for the same seed
    model = build_detector(
        train_ds.in_channels,
        arch=config.arch,
        anchor_sizes=config.anchor_sizes,
        pretrained_backbone=config.pretrained_backbone and new_run,
    )
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optim: torch.optim.Optimizer = (
        torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
        if config.optimizer == "sgd"
        else torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    )

    def loss(net: nn.Module, batch) -> torch.Tensor:
        images, targets = batch
        wanted = [
            {"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets
        ]
        return sum(net([im.to(device) for im in images], wanted).values())

    validation = None
    if val_ds is not None:
        val_lesions = val_ds.lesions
        validation = Validation(
            val_ds,
            lambda part: predict(model, part, batch_size=config.batch_size, device=device),
            lambda parts: _froc_record(val_lesions, parts),
        )
    return Training(
        model=model,
        optimizer=optim,
        train_set=train_ds,
        loss=loss,
        validation=validation,
        score_key="average",
        best_key="best_average",
        saved={
            "config": config.to_json(),
            "preprocessing": describe(train_ds.params),
            "in_channels": train_ds.in_channels,
        },
        collate_fn=collate_detection,
        lr_at=lambda step, epoch: _lr_at(config, step, epoch),
        clip_norm=10.0,
    )


def _froc_record(lesions: Sequence[Lesion], parts: Sequence[tuple]) -> dict:
    """The validation record of :func:`predict`'s results on parts of the images."""
    names = [n for p in parts for n in p[0]]
    boxes = np.concatenate([p[1] for p in parts]).reshape(-1, 4)
    result = froc_of(lesions, names, boxes, np.concatenate([p[2] for p in parts]))
    return {
        "sensitivity": result.sensitivity,
        "average": result.average or 0.0,
        "n_images": result.n_images,
        "n_lesions": result.n_lesions,
    }


def load_detector(checkpoint: str | Path) -> tuple[nn.Module, dict]:
    """Model (eval mode) and checkpoint dict from ``best.pt`` or ``last.pt``."""
    ckpt = DETECTOR_RUN.load(Path(checkpoint))
    try:
        config = TrainConfig.from_json(ckpt["config"])
        from_description(ckpt["preprocessing"])
        model = build_detector(
            ckpt["in_channels"], arch=config.arch, anchor_sizes=config.anchor_sizes
        )
        model.load_state_dict(ckpt["model"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise DetectorError(f"{checkpoint}: not a deeplesion checkpoint: {exc}") from exc
    model.eval()
    return model, ckpt


def detect(
    root: str | Path,
    checkpoint: str | Path,
    out_csv: str | Path,
    *,
    split: str | None = "test",
    lesions: LesionTable | Sequence[Lesion] | str | Path | None = None,
    batch_size: int = 2,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    store: str | Path | None = None,
) -> Path:
    """Write predictions on ``split``'s key slices (1-based DL_info pixels) to ``out_csv``
    (``store``: read the slices from a training store instead of the PNGs)."""
    from deeplesion.evaluation.froc import write_predictions_csv

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DetectorError(f"batch_size={batch_size!r}: expected an integer >= 1")
    check_device(device)
    model, ckpt = load_detector(checkpoint)
    model.to(device)
    config = TrainConfig.from_json(ckpt["config"])
    ds = _dataset(
        Path(root),
        config,
        split,
        lesions,
        train=False,
        include_noisy=True,
        preprocessing=ckpt["preprocessing"],
        store=store,
    )
    names, boxes, scores = predict(
        model,
        ds,
        batch_size=batch_size,
        device=device,
        progress=None if progress is None else (lambda n: progress(n, len(ds))),
    )
    write_predictions_csv(out_csv, names, boxes, scores)
    return Path(out_csv)
