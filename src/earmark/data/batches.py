"""Batching: device-resident clips indexed on the device, or streaming from the memory-mapped cache.

When the decoded clips fit `train.memory_budget_gb`, they are copied to the training device
once and every batch is a gather on the device: the loader yields index tensors only, so
there is no per-item Python work on the hot path. Otherwise a DataLoader streams rows from
the memory-mapped cache (workers, pinned memory) with the same (waves, labels) result.
"""

from __future__ import annotations

from typing import Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset


class IndexBatches(IterableDataset):
    """Yields LongTensor batches of positions 0..n-1; reshuffled each epoch from (seed, epoch)."""

    def __init__(self, positions: np.ndarray, batch_size: int, shuffle: bool, seed: int) -> None:
        self.positions = torch.as_tensor(positions, dtype=torch.long)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return (len(self.positions) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[torch.Tensor]:
        order = self.positions
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = order[torch.randperm(len(order), generator=generator)]
            self.epoch += 1
        yield from torch.split(order, self.batch_size)


class CachedRows(Dataset):
    """Map-style view of memory-mapped rows, for data larger than the device budget."""

    def __init__(self, waves: np.ndarray, rows: np.ndarray, targets: np.ndarray) -> None:
        self.waves, self.rows, self.targets = waves, rows, targets

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(np.array(self.waves[self.rows[index]])), int(self.targets[index])


class AudioDataModule(L.LightningDataModule):
    """Train/val/test batches of (waves (B, n_samples) float32, targets (B,) int64).

    `rows[split]` are row numbers into `waves` (the cache memmap), `targets[split]` class ids.
    """

    def __init__(self, waves: np.ndarray, rows: dict[str, np.ndarray], targets: dict[str, np.ndarray],
                 batch_size: int, seed: int, memory_budget_gb: float, num_workers: int = 0) -> None:
        super().__init__()
        self.waves = waves
        self.rows = rows
        self.targets = targets
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        used_rows = sum(len(r) for r in rows.values())
        self.bank_bytes = used_rows * waves.shape[1] * 4
        self.device_resident = self.bank_bytes <= memory_budget_gb * 1024**3
        self._bank: tuple[torch.Tensor, torch.Tensor] | None = None  # (waves, targets), on CPU until first batch
        self._offsets: dict[str, int] = {}

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

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if self.device_resident:
            self.setup()
            positions = np.arange(len(self.rows[split])) + self._offsets[split]
            batches = IndexBatches(positions, self.batch_size, shuffle=shuffle, seed=self.seed)
            return DataLoader(batches, batch_size=None)
        dataset = CachedRows(self.waves, self.rows[split], self.targets[split])
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          pin_memory=torch.cuda.is_available(), generator=generator,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        if isinstance(batch, torch.Tensor):  # index batch: gather on the device
            waves, targets = self._bank_on(device)
            index = batch.to(device, non_blocking=True)
            return waves[index], targets[index]
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def _bank_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._bank is not None
        waves, targets = self._bank
        if waves.device != device:
            self._bank = (waves.to(device), targets.to(device))  # moved once, then reused
        return self._bank
