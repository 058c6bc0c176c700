"""Batching: device-resident clips indexed on the device, or streaming from the memory-mapped cache.

Both paths draw their batches from one `IndexBatches`: per epoch, a permutation (or a weighted
draw) of the split's positions from (seed, epoch), cut into this rank's share of batches. It is
stateful: Lightning saves `state_dict()` of the train loader in every checkpoint and calls
`load_state_dict()` before iterating on resume, so a run resumed mid-epoch sees the same batches.

When the decoded clips fit `train.memory_budget_gb`, they are copied to the training device once
and every batch is a gather on the device: the loader yields index tensors only, so there is no
per-item Python work on the hot path. Otherwise a DataLoader over the memory-mapped cache (workers,
pinned memory) turns the same index batches into (waves, labels).

Models that take groups (speaker-personalised ones) get batches of (waves, labels, group ids) on
both paths; every other model gets the two-tuple.
"""

from __future__ import annotations

from typing import Any, Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from earmark.errors import EarmarkError

SAMPLERS = ("shuffle", "weighted", "sequential")


class IndexBatches:
    """Batches (LongTensor) of `positions` for one rank; each pass over it is one epoch.

    sampler: "sequential" (eval), "shuffle" (a permutation from (seed, epoch)) or "weighted"
    (len(positions) draws with replacement, probability ∝ `weights`). Under DDP every rank draws
    the same epoch order and takes the contiguous block `rank` of `world_size` equal blocks,
    so ranks see disjoint clips and the same number of batches (a training epoch drops the last
    len % world_size clips of its order; an eval pass splits the positions unevenly instead).
    """

    def __init__(self, positions: np.ndarray, batch_size: int, sampler: str = "sequential", seed: int = 0,
                 weights: np.ndarray | None = None, rank: int = 0, world_size: int = 1) -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}")
        if sampler == "weighted" and (weights is None or len(weights) != len(positions)):
            raise ValueError("the weighted sampler needs one weight per position")
        self.positions = torch.as_tensor(np.asarray(positions), dtype=torch.long)
        self.weights = None if weights is None else torch.as_tensor(np.asarray(weights), dtype=torch.double)
        self.batch_size = batch_size
        self.kind = sampler  # not `.sampler`: Lightning treats a loader's `.sampler` as a torch Sampler
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.epoch = -1  # the epoch of the pass in progress; the first pass is epoch 0
        self.position = 0  # batches of this epoch already handed out
        self._resume_at: int | None = None

    def _share(self) -> tuple[int, int]:
        """(start, stop) of this rank's block in the epoch order."""
        n = len(self.positions)
        if self.kind == "sequential":
            bounds = np.linspace(0, n, self.world_size + 1).round().astype(int)
            return int(bounds[self.rank]), int(bounds[self.rank + 1])
        per_rank = n // self.world_size
        return self.rank * per_rank, (self.rank + 1) * per_rank

    def __len__(self) -> int:
        start, stop = self._share()
        return -(-(stop - start) // self.batch_size)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """This rank's positions for `epoch`, in batch order: (n_rank,) int64."""
        order = self.positions
        if self.kind != "sequential":
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            if self.kind == "weighted":
                draws = torch.multinomial(self.weights, len(order), replacement=True, generator=generator)
            else:
                draws = torch.randperm(len(order), generator=generator)
            order = order[draws]
        start, stop = self._share()
        return order[start:stop]

    def __iter__(self) -> Iterator[torch.Tensor]:
        # a generator: the epoch starts at the first next(), after any load_state_dict
        if self._resume_at is None:
            self.epoch, self.position = self.epoch + 1, 0
        else:
            self.position, self._resume_at = self._resume_at, None
        batches = torch.split(self.epoch_order(self.epoch), self.batch_size)
        while self.position < len(batches):
            self.position += 1
            yield batches[self.position - 1]

    @property
    def next_start(self) -> int:
        """The batch the next pass starts at: a restored mid-epoch position, else 0."""
        return self._resume_at or 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "n_batches": len(self), "seed": self.seed,
                "sampler": self.kind}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state["n_batches"], state["seed"], state["sampler"]) != (len(self), self.seed, self.kind):
            raise EarmarkError(f"the checkpoint's batch order ({state['n_batches']} batches, seed {state['seed']}, "
                               f"{state['sampler']} sampler) does not match this run's ({len(self)}, {self.seed}, "
                               f"{self.kind}); resume with the run's own config and devices")
        self.epoch, self.position = state["epoch"], state["position"]
        # saved at the end of an epoch: the next pass starts the next epoch; otherwise it continues this one
        finished_or_unstarted = self.position >= len(self) or self.epoch < 0
        self._resume_at = None if finished_or_unstarted else self.position


class CachedRows(Dataset):
    """Map-style view of memory-mapped rows: one batch of positions is one fancy-indexed read.

    Items are (wave, target), or (wave, target, group id) when `groups` (one id per row) is given.
    """

    def __init__(self, waves: np.ndarray, rows: np.ndarray, targets: np.ndarray,
                 groups: np.ndarray | None = None) -> None:
        self.waves, self.rows, self.targets, self.groups = waves, rows, targets, groups

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple:
        item = (torch.from_numpy(np.array(self.waves[self.rows[index]])), int(self.targets[index]))
        return item if self.groups is None else item + (int(self.groups[index]),)

    def __getitems__(self, positions: list[int]) -> tuple[torch.Tensor, ...]:
        positions = np.asarray(positions)
        waves = np.asarray(self.waves[self.rows[positions]], dtype=np.float32)  # (B, n_samples)
        batch = (torch.from_numpy(waves), torch.from_numpy(self.targets[positions]).long())
        return batch if self.groups is None else batch + (torch.from_numpy(self.groups[positions]).long(),)


def _whole_batch(batch):
    """collate_fn: `CachedRows.__getitems__` already returns the batch."""
    return batch


class StreamingBatches:
    """A DataLoader over `CachedRows` driven by `IndexBatches`, stateful like them.

    Workers read ahead, so the resume position counts batches handed to the trainer, not batches
    the sampler has produced.
    """

    def __init__(self, dataset: CachedRows, batches: IndexBatches, num_workers: int, seed: int) -> None:
        self.batches = batches
        self.loader = DataLoader(dataset, batch_sampler=batches, collate_fn=_whole_batch, num_workers=num_workers,
                                 pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0,
                                 # its own generator: creating an iterator must not draw from the global RNG
                                 generator=torch.Generator().manual_seed(seed))
        self.handed_out = 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # a generator, so workers start (and read the sampler's state) only at the first next()
        self.handed_out = self.batches.next_start
        for batch in self.loader:
            self.handed_out += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {**self.batches.state_dict(), "position": self.handed_out}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches.load_state_dict(state)
        self.handed_out = state["position"]


def class_balanced_weights(targets: np.ndarray, labels: list[str]) -> np.ndarray:
    """Per-clip sampling weights (N,) so every class is drawn equally often; every class needs clips."""
    counts = np.bincount(targets, minlength=len(labels))
    missing = [label for label, count in zip(labels, counts) if count == 0]
    if missing:
        raise EarmarkError(f"train.sampler=weighted needs training clips of every class; the train split has none "
                           f"of: {', '.join(missing)} (change split.* or set train.sampler=shuffle)")
    return 1.0 / counts[targets]


class AudioDataModule(L.LightningDataModule):
    """Train/val/test batches of (waves (B, n_samples) float32, targets (B,) int64), plus group ids
    (B,) int64 as a third element when `groups` is given.

    `rows[split]` are row numbers into `waves` (the cache memmap), `targets[split]` class ids,
    `groups[split]` (optional) a group id per clip (-1: no group, or one unseen in training).
    `sampler` is "shuffle" or "weighted" (classes drawn equally often; needs `labels`);
    `overfit` makes the train loader one fixed batch.
    """

    def __init__(self, waves: np.ndarray, rows: dict[str, np.ndarray], targets: dict[str, np.ndarray],
                 batch_size: int, seed: int, memory_budget_gb: float, num_workers: int = 0,
                 sampler: str = "shuffle", labels: list[str] | None = None, overfit: bool = False,
                 groups: dict[str, np.ndarray] | None = None) -> None:
        super().__init__()
        self.waves = waves
        self.rows = rows
        self.targets = targets
        self.groups = groups
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.train_sampler = "sequential" if overfit else sampler
        self.overfit = overfit
        self.sample_weights = class_balanced_weights(targets["train"], labels or []) if sampler == "weighted" else None
        used_rows = sum(len(r) for r in rows.values())
        self.bank_bytes = used_rows * waves.shape[1] * 4
        self.device_resident = self.bank_bytes <= memory_budget_gb * 1024**3
        self._bank: tuple[torch.Tensor, ...] | None = None  # (waves, targets[, groups]), on CPU until first batch
        self._offsets: dict[str, int] = {}
        self._train_loader: IndexBatches | StreamingBatches | None = None
        self._train_state_to_load: dict[str, Any] | None = None
        # an eval split smaller than the number of ranks leaves some ranks without batches
        self.allow_zero_length_dataloader_with_multiple_devices = True

    def setup(self, stage: str | None = None) -> None:
        if not self.device_resident or self._bank is not None:
            return
        blocks, labels, offset = [], [], 0
        for split, split_rows in self.rows.items():
            self._offsets[split] = offset
            blocks.append(np.asarray(self.waves[split_rows], dtype=np.float32))
            labels.append(self.targets[split])
            offset += len(split_rows)
        self._bank = (torch.from_numpy(np.concatenate(blocks)), torch.from_numpy(np.concatenate(labels)).long())
        if self.groups is not None:
            group_ids = np.concatenate([self.groups[split] for split in self.rows])
            self._bank += (torch.from_numpy(group_ids).long(),)

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, split: str, sampler: str = "sequential"):
        rank, world_size = self._rank()
        positions = np.arange(len(self.rows[split]))
        if split == "train" and self.overfit:
            positions = positions[: self.batch_size * world_size]  # one fixed batch per rank, every epoch
        weights = self.sample_weights if sampler == "weighted" else None
        if self.device_resident:
            self.setup()
            positions = positions + self._offsets[split]
        batches = IndexBatches(positions, self.batch_size, sampler, self.seed, weights, rank, world_size)
        if self.device_resident:
            return batches
        dataset = CachedRows(self.waves, self.rows[split], self.targets[split],
                             None if self.groups is None else self.groups[split])
        return StreamingBatches(dataset, batches, self.num_workers, self.seed)

    def train_dataloader(self):
        self._train_loader = self._loader("train", self.train_sampler)
        if self._train_state_to_load is not None:
            self._train_loader.load_state_dict(self._train_state_to_load)
            self._train_state_to_load = None
        return self._train_loader

    # The train loader's position travels through the DataModule's state as well as through Lightning's
    # own loader states: Lightning skips the latter when `configure_optimizers` asks for
    # `trainer.estimated_stepping_batches` (it builds the loader before restoring; Lightning issue #20550),
    # whereas it restores a DataModule's state before it builds anything.
    def state_dict(self) -> dict[str, Any]:
        return {"train_batches": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._train_state_to_load = state.get("train_batches")

    def val_dataloader(self):
        return self._loader("val")

    def test_dataloader(self):
        return self._loader("test")

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        if isinstance(batch, torch.Tensor):  # index batch: gather on the device
            index = batch.to(device, non_blocking=True)
            return tuple(column[index] for column in self._bank_on(device))  # (waves, targets[, groups])
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def _bank_on(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        if self._bank is None:
            raise RuntimeError("the device-resident bank is built in setup(); call setup() first")
        if self._bank[0].device != device:
            self._bank = tuple(column.to(device) for column in self._bank)  # moved once, then reused
        return self._bank
