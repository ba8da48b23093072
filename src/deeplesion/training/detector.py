"""Baseline lesion detector: torchvision Faster R-CNN v2 configured for DeepLesion.

- :func:`build_detector`: ``fasterrcnn_resnet50_fpn_v2`` with N input channels (context
  slices; first convolution adapted), no ImageNet normalisation (mean 0, std 1), no
  resizing inside the model (the dataset's preprocessing sets the size), anchors sized for
  lesions (16..96 px, one size per FPN level) and MULAN's post-processing (NMS 0.5, score
  >= 0.05, at most 50 boxes). No weights are downloaded unless ``pretrained_backbone``.
  ``arch='tiny'`` is a small stride-4 CNN with the same heads, for CPU smoke runs / tests.
- :func:`train_detector`: training with atomic checkpoints (``last.pt`` every
  ``checkpoint_every`` iterations and each epoch), resume after a kill from ``last.pt``
  (bit-identical on the CPU), validation FROC after each epoch (``deeplesion.evaluation``)
  and ``best.pt`` kept by average sensitivity (0.5, 1, 2, 4 FPs per image).
- :func:`detect`: predictions CSV ``file_name,x1,y1,x2,y2,score`` in 1-based DL_info
  pixels, the format ``deeplesion evaluate detection`` reads.
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from deeplesion.data.annotations import Lesion, LesionTable, index_to_px1
from deeplesion.data.io import atomic_path, write_text_atomic
from deeplesion.errors import DeepLesionError
from deeplesion.training.datasets import KeySliceDetectionDataset, collate_detection
from deeplesion.training.distributed import Workers, join, rank_batches, shard, wrap
from deeplesion.training.presets import preset as get_preset
from deeplesion.training.settings import (
    PreprocessError,
    Preprocessing,
    coerce_override,
    describe,
    from_description,
)

ARCHS = ("fasterrcnn_resnet50_fpn_v2", "tiny")
#: MULAN's anchor sizes (px); one per FPN level for the ResNet-50 FPN backbone.
LESION_ANCHORS = (16, 24, 32, 48, 96)

Progress = Callable[[int, int, dict], None]


class DetectorError(DeepLesionError, ValueError):
    """A detector configuration or checkpoint that cannot be used."""


def check_device(device: str) -> torch.device:
    """``device`` as a torch device, or :class:`DetectorError` when it is not a device
    string or names hardware this machine does not have (checked before any work)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DetectorError(
            f"invalid device {device!r}: expected cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DetectorError(
                f"device {device!r}: CUDA is not available on this machine "
                "(no GPU found or PyTorch built without CUDA); use --device "
                "cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DetectorError(
                f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise DetectorError(f"device {device!r}: MPS is not available on this machine")
    elif dev.type != "cpu":
        raise DetectorError(f"device {device!r}: only cpu, cuda and mps are supported")
    return dev


# --------------------------------------------------------------------------- model


def _no_resize_transform(in_channels: int, size_divisible: int = 32):
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    class _Identity(GeneralizedRCNNTransform):
        """Pads to a batch; never resizes (preprocessing already fixed the size)."""

        def resize(self, image, target=None):
            return image, target

    return _Identity(
        min_size=512,
        max_size=512,
        image_mean=[0.0] * in_channels,
        image_std=[1.0] * in_channels,
        size_divisible=size_divisible,
    )


class TinyBackbone(nn.Sequential):
    """Five 3x3 conv-BN-ReLU layers, output stride 4, 128 channels (CPU smoke runs)."""

    def __init__(self, in_channels: int) -> None:
        def block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, stride, dilation, dilation, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        super().__init__(
            *block(in_channels, 32, 2),
            *block(32, 32),
            *block(32, 64, 2),
            *block(64, 64, dilation=2),
            *block(64, 128, dilation=4),
        )
        self.out_channels = 128


def build_detector(
    in_channels: int = 3,
    *,
    arch: str = "fasterrcnn_resnet50_fpn_v2",
    anchor_sizes: Sequence[float] = LESION_ANCHORS,
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    pretrained_backbone: bool = False,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 50,
) -> nn.Module:
    """A two-class (background, lesion) Faster R-CNN taking ``in_channels`` slices."""
    from torchvision.models.detection import FasterRCNN, fasterrcnn_resnet50_fpn_v2
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    if in_channels < 1:
        raise DetectorError(f"in_channels must be >= 1, got {in_channels}")
    sizes = tuple(float(s) for s in anchor_sizes)
    ratios = tuple(float(r) for r in aspect_ratios)
    post = {
        "box_score_thresh": score_thresh,
        "box_nms_thresh": nms_thresh,
        "box_detections_per_img": detections_per_img,
    }
    if arch == "fasterrcnn_resnet50_fpn_v2":
        from torchvision.models import ResNet50_Weights

        if len(sizes) != 5:
            raise DetectorError(f"the FPN has 5 levels: give 5 anchor sizes, got {sizes}")
        model = fasterrcnn_resnet50_fpn_v2(
            weights=None,
            num_classes=2,
            weights_backbone=ResNet50_Weights.IMAGENET1K_V1 if pretrained_backbone else None,
            **post,
        )
        model.rpn.anchor_generator = AnchorGenerator(
            tuple((s,) for s in sizes), (ratios,) * len(sizes)
        )
        if len(ratios) != 3:
            raise DetectorError("the v2 RPN head expects 3 aspect ratios")
        old = model.backbone.body.conv1
        if in_channels != 3:
            new = nn.Conv2d(
                in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False
            )
            if pretrained_backbone:  # spread the RGB filters over the slices
                with torch.no_grad():
                    new.weight.copy_(
                        old.weight.mean(1, keepdim=True).repeat(1, in_channels, 1, 1)
                        * 3.0
                        / in_channels
                    )
            model.backbone.body.conv1 = new
    elif arch == "tiny":
        from torchvision.models.detection.rpn import RPNHead

        backbone = TinyBackbone(in_channels)
        anchors = AnchorGenerator((sizes,), (ratios,))
        model = FasterRCNN(
            backbone,
            num_classes=None,
            rpn_anchor_generator=anchors,
            rpn_head=RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0]),
            box_roi_pool=MultiScaleRoIAlign(["0"], 7, 1),
            box_head=TwoMLPHead(backbone.out_channels * 49, 256),
            box_predictor=FastRCNNPredictor(256, 2),
            rpn_pre_nms_top_n_train=600,
            rpn_post_nms_top_n_train=300,
            rpn_pre_nms_top_n_test=300,
            rpn_post_nms_top_n_test=150,
            box_batch_size_per_image=64,
            **post,
        )
    else:
        raise DetectorError(f"unknown arch {arch!r}; allowed: {ARCHS}")
    model.transform = _no_resize_transform(in_channels)
    return model


# --------------------------------------------------------------------------- config


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
        ints = {
            "epochs": 1,
            "batch_size": 1,
            "warmup_iterations": 0,
            "num_workers": 0,
            "checkpoint_every": 0,
        }
        for name, low in ints.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise DetectorError(f"{name}={value!r}: expected an integer >= {low}")
        if self.iterations_per_epoch is not None and (
            not isinstance(self.iterations_per_epoch, int) or self.iterations_per_epoch < 1
        ):
            raise DetectorError(
                f"iterations_per_epoch={self.iterations_per_epoch!r}: "
                "expected an integer >= 1 or None"
            )
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if (
                not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
                or (name == "lr" and value == 0)
            ):
                raise DetectorError(
                    f"{name}={value!r}: expected a number {'> 0' if name == 'lr' else '>= 0'}"
                )
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


def _save(path: Path, payload: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


_CHECKPOINT_KEYS = ("model", "config", "preprocessing", "in_channels")


def _load(path: Path) -> dict:
    """A checkpoint written by this module (plain containers and tensors only)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise DetectorError(f"{path}: cannot read checkpoint: {exc}") from exc
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        ImportError,
        IndexError,
        KeyError,
    ) as exc:
        raise DetectorError(
            f"{path}: not a deeplesion checkpoint (PyTorch cannot read it "
            f"as one: {type(exc).__name__})"
        ) from exc
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in _CHECKPOINT_KEYS):
        raise DetectorError(
            f"{path}: not a deeplesion checkpoint (expected a dict with "
            f"{', '.join(_CHECKPOINT_KEYS)})"
        )
    return ckpt


def saved_run(out_dir: str | Path) -> tuple[TrainConfig, Preprocessing] | None:
    """The settings a run in ``out_dir`` resumes with (``None`` when it has no last.pt)."""
    path = Path(out_dir) / "last.pt"
    if not path.is_file():
        return None
    ckpt = _load(path)
    try:
        return TrainConfig.from_json(ckpt["config"]), from_description(ckpt["preprocessing"])
    except (TypeError, ValueError, KeyError) as exc:
        raise DetectorError(f"{path}: not a deeplesion checkpoint: {exc}") from exc


def resume_differences(
    saved: TrainConfig, saved_params: Preprocessing, requested: TrainConfig, names: Iterable[str]
) -> list[tuple[str, object, object]]:
    """``(field, requested, saved)`` for each field in ``names`` that a resumed run ignores.

    ``names`` are :class:`TrainConfig` fields the caller set; each key of
    ``requested.overrides`` is compared with the saved preprocessing (``preset`` by name).
    ``epochs`` only counts when it is below the saved number (a larger one extends the run).
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
    last_path = out_dir / "last.pt"
    state = _load(last_path) if last_path.is_file() else None
    if state is not None:
        try:
            saved = TrainConfig.from_json(state["config"])
        except (TypeError, ValueError) as exc:
            raise DetectorError(f"{last_path}: not a deeplesion checkpoint: {exc}") from exc
        if config is not None:
            config.check()
            saved.epochs = max(saved.epochs, config.epochs)
        config = saved
    config = config or TrainConfig()
    config.check()
    check_device(config.device)
    try:
        get_preset(config.preset, **dict(config.overrides))
    except PreprocessError as exc:
        raise DetectorError(f"preprocessing of the run: {exc}") from exc
    workers = join(config.device)
    try:
        return _train(root, out_dir, config, state, workers, lesions, progress, stop_after, store)
    finally:
        workers.leave()


def _train(
    root: Path,
    out_dir: Path,
    config: TrainConfig,
    state: dict | None,
    workers: Workers,
    lesions: LesionTable | Sequence[Lesion] | str | Path | None,
    progress: Progress | None,
    stop_after: int | None,
    store: str | Path | None,
) -> TrainResult:
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    device = workers.device(config.device)
    if not workers.main:
        progress = None

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
        pretrained_backbone=config.pretrained_backbone and state is None,
    )
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optim: torch.optim.Optimizer
    if config.optimizer == "sgd":
        optim = torch.optim.SGD(
            params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay
        )
    else:
        optim = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    batches_per_epoch = config.iterations_per_epoch or math.ceil(
        len(train_ds) / (config.batch_size * workers.world_size)
    )
    total = batches_per_epoch * config.epochs
    epoch, iteration, step, history, best = 0, 0, 0, [], -1.0
    if state is not None:
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optimizer"])
        epoch, iteration, step = state["epoch"], state["iteration"], state["step"]
        history, best = state["history"], state["best_average"]
        torch.set_rng_state(state["torch_rng"])
    net = wrap(model, workers, device)  # trains; model itself is saved and validated
    preprocessing = describe(train_ds.params)

    def payload() -> dict:
        return {
            "model": model.state_dict(),
            "optimizer": optim.state_dict(),
            "config": config.to_json(),
            "preprocessing": preprocessing,
            "in_channels": train_ds.in_channels,
            "epoch": epoch,
            "iteration": iteration,
            "step": step,
            "history": history,
            "best_average": best,
            "torch_rng": torch.get_rng_state(),
        }

    while epoch < config.epochs:
        train_ds.set_epoch(epoch)
        batches = rank_batches(
            len(train_ds),
            config.batch_size,
            batches_per_epoch,
            seed=config.seed,
            epoch=epoch,
            rank=workers.rank,
            world_size=workers.world_size,
        )
        loader = DataLoader(
            train_ds,
            batch_sampler=batches[iteration:],
            collate_fn=collate_detection,
            num_workers=config.num_workers,
            generator=torch.Generator().manual_seed(config.seed + epoch),
        )
        net.train()
        for images, targets in loader:
            for group in optim.param_groups:
                group["lr"] = _lr_at(config, step, epoch)
            images = [im.to(device) for im in images]
            targets = [
                {"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets
            ]
            losses = net(images, targets)
            loss = sum(losses.values())
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            optim.step()
            iteration += 1
            step += 1
            if progress is not None:
                progress(step, total, {"epoch": epoch, "loss": float(loss.detach())})
            stopping = stop_after is not None and step >= stop_after
            if workers.main and (
                stopping
                or (
                    config.checkpoint_every
                    and step % config.checkpoint_every == 0
                    and iteration < batches_per_epoch
                )
            ):
                _save(last_path, payload())
            if stopping:
                workers.barrier()
                return TrainResult(
                    out_dir, last_path, best_path if best_path.is_file() else None, history, False
                )
        record: dict = {"epoch": epoch + 1, "step": step}
        if val_ds is not None:
            mine = Subset(val_ds, shard(len(val_ds), workers))
            part = predict(model, mine, batch_size=config.batch_size, device=device)
            val = None
            parts = workers.gather(part)
            if workers.main:
                names = [n for p in parts for n in p[0]]
                boxes = np.concatenate([p[1] for p in parts]).reshape(-1, 4)
                scores = np.concatenate([p[2] for p in parts])
                result = froc_of(val_ds.lesions, names, boxes, scores)
                val = {
                    "sensitivity": result.sensitivity,
                    "average": result.average or 0.0,
                    "n_images": result.n_images,
                    "n_lesions": result.n_lesions,
                }
            record["val"] = workers.broadcast(val)
            if progress is not None:
                progress(step, total, {"epoch": epoch, "val": record["val"]})
        history.append(record)
        average = record.get("val", {}).get("average", 0.0)
        epoch, iteration = epoch + 1, 0
        if val_ds is None or average > best or not best_path.is_file():
            best = max(best, average)
            if workers.main:
                _save(
                    best_path,
                    {
                        "model": model.state_dict(),
                        "config": config.to_json(),
                        "preprocessing": preprocessing,
                        "in_channels": train_ds.in_channels,
                        "epoch": epoch,
                        "val": record.get("val"),
                    },
                )
        if workers.main:
            _save(last_path, payload())
            write_text_atomic(out_dir / "history.json", json.dumps(history, indent=2) + "\n")
    workers.barrier()  # the others return once rank 0's files are complete
    return TrainResult(out_dir, last_path, best_path, history, True)


def load_detector(checkpoint: str | Path) -> tuple[nn.Module, dict]:
    """Model (eval mode) and checkpoint dict from ``best.pt`` or ``last.pt``."""
    ckpt = _load(Path(checkpoint))
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
