"""The training loop of the detector and the classifier (:func:`run_epochs`).

Epochs of seeded batches (:func:`~deeplesion.training.distributed.rank_batches`), a
validation after each epoch, ``best.pt`` kept by the validation score, ``last.pt`` written
atomically every ``checkpoint_every`` iterations and after each epoch, and resume from it
(bit-identical on the CPU). Under ``torchrun`` the model trains in DistributedDataParallel;
rank 0 alone writes files and reports progress, and the validation set is split over the
ranks (:class:`Validation`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from deeplesion.data.io import write_text_atomic
from deeplesion.training.distributed import Workers, rank_batches, shard, wrap
from deeplesion.training.runs import save_checkpoint

Progress = Callable[[int, int, dict], None]


class EpochDataset(Protocol):
    """A map-style dataset whose augmentation draws change with ``set_epoch(epoch)``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...

    def set_epoch(self, epoch: int) -> None: ...


@dataclass
class Validation:
    """How a model is validated: ``predict`` runs on a part of ``dataset`` (each rank its
    block); ``combine`` makes the validation record of the parts, in order, which cover
    the dataset once, as one process sees it."""

    dataset: Dataset
    predict: Callable[[Dataset], Any]
    combine: Callable[[Sequence[Any]], dict]

    def run(self, workers: Workers) -> dict:
        """The validation record on every rank (combined on rank 0)."""
        mine = shard(len(cast(Sized, self.dataset)), workers)
        part = self.predict(Subset(self.dataset, mine))
        parts = workers.gather(part)
        return workers.broadcast(self.combine(parts) if workers.main else None)


@dataclass
class Training:
    """What one kind of model brings to the loop."""

    model: nn.Module  #: on its device; saved and validated as it is (never the DDP wrapper)
    optimizer: torch.optim.Optimizer
    train_set: EpochDataset
    loss: Callable[[nn.Module, Any], torch.Tensor]  #: (model to train, batch) -> loss
    validation: Validation | None  #: ``None``: the run has no validation
    score_key: str  #: the validation record's entry that ``best.pt`` maximises
    best_key: str  #: where ``last.pt`` keeps the best score so far
    saved: dict  #: stored in every checkpoint (config, preprocessing, in_channels, ...)
    collate_fn: Callable | None = None
    lr_at: Callable[[int, int], float] | None = None  #: (step, epoch) -> learning rate
    clip_norm: float | None = None  #: gradient norm clipping


@dataclass
class LoopResult:
    history: list[dict]
    finished: bool  #: False when stopped early (``stop_after``)


def run_epochs(
    training: Training,
    config: Any,
    out_dir: Path,
    state: dict | None,
    workers: Workers,
    *,
    progress: Progress | None = None,
    stop_after: int | None = None,
) -> LoopResult:
    """Train ``config.epochs`` epochs in ``out_dir``, from ``state`` (``last.pt``) if given.

    ``config`` gives ``epochs``, ``batch_size`` (per process), ``iterations_per_epoch``
    (None: one pass over the training set), ``seed``, ``num_workers`` and
    ``checkpoint_every``. ``progress(done, total, info)`` after each iteration
    (``info['loss']``) and each validation (``info['val']``), on rank 0. ``stop_after``
    stops after that many iterations in all, as a kill would, after saving ``last.pt``.
    History records: ``epoch``, ``step``, ``loss`` (the epoch's last, rank 0's) and ``val``.
    """
    model, optim = training.model, training.optimizer
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    if not workers.main:
        progress = None
    params = [p for group in optim.param_groups for p in group["params"]]
    batches_per_epoch = config.iterations_per_epoch or -(
        -len(training.train_set) // (config.batch_size * workers.world_size)
    )
    total = batches_per_epoch * config.epochs
    epoch, iteration, step, history, best = 0, 0, 0, [], -1.0
    if state is not None:
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optimizer"])
        epoch, iteration, step = state["epoch"], state["iteration"], state["step"]
        history, best = state["history"], state[training.best_key]
        torch.set_rng_state(state["torch_rng"])
    net = wrap(model, workers, _device_of(model))  # trains; model itself is saved

    def save_last() -> None:
        save_checkpoint(
            last_path,
            {
                **training.saved,
                "model": model.state_dict(),
                "optimizer": optim.state_dict(),
                "epoch": epoch,
                "iteration": iteration,
                "step": step,
                "history": history,
                training.best_key: best,
                "torch_rng": torch.get_rng_state(),
            },
        )

    loss = None
    while epoch < config.epochs:
        training.train_set.set_epoch(epoch)
        batches = rank_batches(
            len(training.train_set),
            config.batch_size,
            batches_per_epoch,
            seed=config.seed,
            epoch=epoch,
            rank=workers.rank,
            world_size=workers.world_size,
        )
        loader: DataLoader = DataLoader(
            cast(Dataset, training.train_set),
            batch_sampler=batches[iteration:],
            collate_fn=training.collate_fn,
            num_workers=config.num_workers,
            generator=torch.Generator().manual_seed(config.seed + epoch),
        )
        net.train()
        for batch in loader:
            if training.lr_at is not None:
                for group in optim.param_groups:
                    group["lr"] = training.lr_at(step, epoch)
            loss = training.loss(net, batch)
            optim.zero_grad()
            loss.backward()
            if training.clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, training.clip_norm)
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
                save_last()
            if stopping:
                workers.barrier()
                return LoopResult(history, False)
        record: dict = {"epoch": epoch + 1, "step": step}
        if loss is not None:
            record["loss"] = float(loss.detach())
        if training.validation is not None:
            record["val"] = training.validation.run(workers)
            if progress is not None:
                progress(step, total, {"epoch": epoch, "val": record["val"]})
        history.append(record)
        score = record.get("val", {}).get(training.score_key, 0.0)
        epoch, iteration = epoch + 1, 0
        if training.validation is None or score > best or not best_path.is_file():
            best = max(best, score)
            if workers.main:
                save_checkpoint(
                    best_path,
                    {
                        **training.saved,
                        "model": model.state_dict(),
                        "epoch": epoch,
                        "val": record.get("val"),
                    },
                )
        if workers.main:
            save_last()
            write_text_atomic(out_dir / "history.json", json.dumps(history, indent=2) + "\n")
    workers.barrier()  # the others return once rank 0's files are complete
    return LoopResult(history, True)


def _device_of(model: nn.Module) -> str:
    return str(next(model.parameters()).device)
