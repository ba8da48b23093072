"""Lesion classifier: coarse types (8 classes) or LesaNet tags (171, multi-label).

- :func:`build_classifier`: torchvision ResNet-18 (no weights downloaded unless
  ``pretrained``) whose first convolution takes the patch's context slices, or ``tiny``
  (three conv layers, for quick CPU checks).
- :func:`train_classifier`: patches from :class:`LesionPatchDataset`; atomic checkpoints
  (``last.pt`` every ``checkpoint_every`` iterations and each epoch), resume from
  ``last.pt`` (bit-identical on the CPU), validation each epoch, ``best.pt`` kept.
  *Types*: only val and test rows carry one, so the labelled rows are split by patient
  (a seeded ``val_fraction`` of the patients validates; no patient is on both sides) and
  ``best.pt`` keeps the best balanced accuracy. *Tags*: LesaNet's own train / val lesion
  lists; uncertain labels are left out of the loss (LesaNet's masking) and ``best.pt``
  keeps the best mean AUC.
- :func:`classify`: a CSV of predictions: types ``row_index,file_name,predicted_type,
  predicted_name,p_<type>...``; tags ``lesion_idx,<term>...`` (sigmoid scores, the format
  of ``deeplesion evaluate tagging``).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from deeplesion.data.annotations import Lesion, LesionTable
from deeplesion.data.io import atomic_path, write_text_atomic
from deeplesion.training.classifier_setup import (
    ARCHS,
    INPUT_SCALE,
    TARGETS,
    TYPE_CODES,
    TYPE_NAMES,
    ClassifierConfig,
    ClassifierError,
    PatchTargets,
    TagTargets,
    _patches,
    build_classifier,
    patient_split,
    training_lesions,
)
from deeplesion.training.datasets import LesionPatchDataset, _load_table
from deeplesion.training.detector import check_device
from deeplesion.training.presets import preset as get_preset
from deeplesion.training.settings import PreprocessError, describe, from_description

__all__ = [
    "ARCHS",
    "TARGETS",
    "TYPE_CODES",
    "TYPE_NAMES",
    "ClassifierConfig",
    "ClassifierError",
    "ClassifierResult",
    "PatchTargets",
    "TagTargets",
    "build_classifier",
    "classify",
    "load_classifier",
    "patient_split",
    "predict_scores",
    "saved_config",
    "train_classifier",
    "training_lesions",
]

Progress = Callable[[int, int, dict], None]

# --------------------------------------------------------------------------- training


@dataclass
class ClassifierResult:
    out_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    history: list[dict]
    finished: bool
    split: str  #: how the lesions were split


def _save(path: Path, payload: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


_CHECKPOINT_KEYS = ("model", "config", "preprocessing", "in_channels", "outputs")


def _load(path: Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise ClassifierError(f"{path}: cannot read checkpoint: {exc}") from exc
    except Exception as exc:  # the unpickler raises many kinds on a foreign file
        raise ClassifierError(
            f"{path}: not a deeplesion classifier checkpoint ({type(exc).__name__})"
        ) from exc
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in _CHECKPOINT_KEYS):
        raise ClassifierError(
            f"{path}: not a deeplesion classifier checkpoint (written by train-classifier)"
        )
    return ckpt


def saved_config(out_dir: str | Path) -> ClassifierConfig | None:
    """The settings a run in ``out_dir`` resumes with (``None`` without ``last.pt``)."""
    path = Path(out_dir) / "last.pt"
    return ClassifierConfig.from_json(_load(path)["config"]) if path.is_file() else None


def _loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "type":
        return nn.functional.cross_entropy(logits, target)
    labels, mask = target[:, 0], target[:, 1]
    per = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return (per * mask).sum() / mask.sum().clamp(min=1.0)


def predict_scores(
    model: nn.Module,
    dataset: Dataset,
    kind: str,
    *,
    batch_size: int = 16,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Class probabilities (types, softmax) or tag scores (sigmoid), one row per item."""
    model.eval()
    out: list[np.ndarray] = []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    done = 0
    with torch.no_grad():
        for patches, _ in loader:
            logits = model(patches.to(device) * INPUT_SCALE)
            probs = logits.softmax(1) if kind == "type" else logits.sigmoid()
            out.append(probs.cpu().numpy().astype(np.float64))
            done += len(patches)
            if progress is not None:
                progress(done)
    return np.concatenate(out) if out else np.zeros((0, 0))


def _validate(model, val: PatchTargets, config: ClassifierConfig) -> dict:
    scores = predict_scores(
        model, val, config.target, batch_size=config.batch_size, device=config.device
    )
    if config.target == "type":
        from deeplesion.evaluation.classification import classification_metrics

        result = classification_metrics(val.labels, scores.argmax(1), TYPE_NAMES)
        return {
            "accuracy": result.accuracy,
            "balanced_accuracy": result.balanced_accuracy,
            "macro_f1": result.macro_f1,
            "n_lesions": result.n_lesions,
            "score": result.balanced_accuracy,
        }
    from deeplesion.evaluation.tagging import tagging_metrics

    targets = np.stack([val[i][1].numpy() for i in range(len(val))])
    tag = tagging_metrics(scores, targets[:, 0] > 0.5, targets[:, 1] > 0.5)
    mean_auc = 0.0 if math.isnan(tag.mean_auc) else tag.mean_auc
    return {
        "mean_auc": mean_auc,
        "overall_f1": tag.overall_f1,
        "n_lesions": tag.n_lesions,
        "score": mean_auc,
    }


def train_classifier(
    root: str | Path,
    out_dir: str | Path,
    config: ClassifierConfig | None = None,
    *,
    lesions: LesionTable | Sequence[Lesion] | str | Path | None = None,
    tags: TagTargets | None = None,
    store: str | Path | None = None,
    progress: Progress | None = None,
    stop_after: int | None = None,
) -> ClassifierResult:
    """Train (or resume) a classifier in ``out_dir``.

    With ``out_dir/last.pt`` the run resumes with the checkpoint's config (a larger
    ``config.epochs`` extends it). ``stop_after`` stops after that many iterations in all
    (as a kill would, after saving ``last.pt``). ``progress(done, total, info)`` after each
    iteration (``info['loss']``) and validation (``info['val']``). ``store``: read the
    slices from a training store (``deeplesion store``) instead of the PNGs.
    """
    root, out_dir = Path(root), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    state = _load(last_path) if last_path.is_file() else None
    if state is not None:
        saved = ClassifierConfig.from_json(state["config"])
        if config is not None:
            config.check()
            saved.epochs = max(saved.epochs, config.epochs)
        config = saved
    config = config or ClassifierConfig()
    config.check()
    check_device(config.device)
    try:
        params = get_preset(config.preset, **dict(config.overrides))
    except PreprocessError as exc:
        raise ClassifierError(f"preprocessing of the run: {exc}") from exc
    table, _source = _load_table(root, lesions)
    train_l, val_l, statement = training_lesions(table, config, tags)
    train_ds = PatchTargets(
        _patches(root, config, train_l, params, train=config.augment, store=store),
        config,
        tags if config.target == "tags" else None,
        shuffle=config.shuffle_labels,
    )
    val_ds = (
        PatchTargets(
            _patches(root, config, val_l, params, train=False, store=store),
            config,
            tags if config.target == "tags" else None,
        )
        if val_l
        else None
    )
    in_channels = params.n_slices
    n_out = len(TYPE_CODES) if config.target == "type" else len(tags.terms)  # type: ignore[union-attr]
    outputs = list(TYPE_NAMES) if config.target == "type" else list(tags.terms)  # type: ignore[union-attr]
    torch.manual_seed(config.seed)
    model = build_classifier(
        in_channels, n_out, arch=config.arch, pretrained=config.pretrained and state is None
    )
    model.to(config.device)
    optim = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    batches_per_epoch = config.iterations_per_epoch or math.ceil(len(train_ds) / config.batch_size)
    total = batches_per_epoch * config.epochs
    epoch, iteration, step, history, best = 0, 0, 0, [], -1.0
    if state is not None:
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optimizer"])
        epoch, iteration, step = state["epoch"], state["iteration"], state["step"]
        history, best = state["history"], state["best_score"]
        torch.set_rng_state(state["torch_rng"])
    preprocessing = describe(params)
    common = {
        "config": config.to_json(),
        "preprocessing": preprocessing,
        "in_channels": in_channels,
        "outputs": outputs,
        "split": statement,
    }
    write_text_atomic(
        out_dir / "split.json",
        json.dumps(
            {
                "statement": statement,
                "train_rows": [l.row_index for l in train_l],
                "val_rows": [l.row_index for l in val_l],
            }
        )
        + "\n",
    )

    def payload() -> dict:
        return {
            **common,
            "model": model.state_dict(),
            "optimizer": optim.state_dict(),
            "epoch": epoch,
            "iteration": iteration,
            "step": step,
            "history": history,
            "best_score": best,
            "torch_rng": torch.get_rng_state(),
        }

    while epoch < config.epochs:
        train_ds.set_epoch(epoch)
        rng = np.random.default_rng((config.seed, epoch))
        order: list[int] = []
        while len(order) < batches_per_epoch * config.batch_size:
            order += rng.permutation(len(train_ds)).tolist()
        batches = [
            order[i * config.batch_size : (i + 1) * config.batch_size]
            for i in range(batches_per_epoch)
        ]
        loader = DataLoader(
            train_ds, batch_sampler=batches[iteration:], num_workers=config.num_workers
        )
        model.train()
        for patches, target in loader:
            logits = model(patches.to(config.device) * INPUT_SCALE)
            loss = _loss(logits, target.to(config.device), config.target)
            optim.zero_grad()
            loss.backward()
            optim.step()
            iteration += 1
            step += 1
            if progress is not None:
                progress(step, total, {"epoch": epoch, "loss": float(loss.detach())})
            stopping = stop_after is not None and step >= stop_after
            if stopping or (
                config.checkpoint_every
                and step % config.checkpoint_every == 0
                and iteration < batches_per_epoch
            ):
                _save(last_path, payload())
            if stopping:
                return ClassifierResult(
                    out_dir,
                    last_path,
                    best_path if best_path.is_file() else None,
                    history,
                    False,
                    statement,
                )
        record: dict = {"epoch": epoch + 1, "step": step, "loss": float(loss.detach())}
        if val_ds is not None:
            record["val"] = _validate(model, val_ds, config)
            if progress is not None:
                progress(step, total, {"epoch": epoch, "val": record["val"]})
        history.append(record)
        score = record.get("val", {}).get("score", 0.0)
        epoch, iteration = epoch + 1, 0
        if val_ds is None or score > best or not best_path.is_file():
            best = max(best, score)
            _save(
                best_path,
                {**common, "model": model.state_dict(), "epoch": epoch, "val": record.get("val")},
            )
        _save(last_path, payload())
        write_text_atomic(out_dir / "history.json", json.dumps(history, indent=2) + "\n")
    return ClassifierResult(out_dir, last_path, best_path, history, True, statement)


def load_classifier(checkpoint: str | Path) -> tuple[nn.Module, dict]:
    """Model (eval mode) and checkpoint dict from ``best.pt`` or ``last.pt``."""
    ckpt = _load(Path(checkpoint))
    try:
        config = ClassifierConfig.from_json(ckpt["config"])
        from_description(ckpt["preprocessing"])
        model = build_classifier(ckpt["in_channels"], len(ckpt["outputs"]), arch=config.arch)
        model.load_state_dict(ckpt["model"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise ClassifierError(
            f"{checkpoint}: not a deeplesion classifier checkpoint: {exc}"
        ) from exc
    model.eval()
    return model, ckpt


def classify(
    root: str | Path,
    checkpoint: str | Path,
    out_csv: str | Path,
    *,
    split: str | None = None,
    lesions: LesionTable | Sequence[Lesion] | str | Path | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    store: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write predictions for every lesion of ``split`` (all rows by default) to ``out_csv``
    (``store``: read the slices from a training store)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ClassifierError(f"batch_size={batch_size!r}: expected an integer >= 1")
    check_device(device)
    model, ckpt = load_classifier(checkpoint)
    model.to(device)
    config = ClassifierConfig.from_json(ckpt["config"])
    params = from_description(ckpt["preprocessing"])
    ds = LesionPatchDataset(
        root,
        split,
        preset=params,
        lesions=lesions,
        padding_px=config.padding_px,
        patch_px=config.patch_px,
        include_noisy=True,
        store=store,
    )
    scores = predict_scores(
        model,
        ds,
        config.target,
        batch_size=batch_size,
        device=device,
        progress=None if progress is None else (lambda n: progress(n, len(ds))),
    )
    outputs = list(ckpt["outputs"])
    with atomic_path(out_csv) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        if config.target == "type":
            writer.writerow(
                ["row_index", "file_name", "predicted_type", "predicted_name"]
                + [f"p_{name.replace(' ', '_')}" for name in outputs]
            )
            for lesion, row in zip(ds.lesions, scores):
                k = int(row.argmax())
                writer.writerow(
                    [lesion.row_index, lesion.file_name, TYPE_CODES[k], outputs[k]]
                    + [f"{v:.6f}" for v in row]
                )
        else:
            writer.writerow(["lesion_idx", *outputs])
            for lesion, row in zip(ds.lesions, scores):
                writer.writerow([lesion.row_index] + [f"{v:.6f}" for v in row])
    return Path(out_csv)
