import numpy as np
import torch

from earmark.data.batches import AudioDataModule, IndexBatches


def make_module(budget_gb):
    waves = np.arange(20 * 4, dtype=np.float32).reshape(20, 4)  # row r holds 4r..4r+3
    rows = {"train": np.arange(0, 12), "val": np.arange(12, 16), "test": np.arange(16, 20)}
    targets = {k: (v % 3).astype(np.int64) for k, v in rows.items()}
    return AudioDataModule(waves, rows, targets, batch_size=5, seed=0, memory_budget_gb=budget_gb), waves, rows


def collect(module, loader):
    out = []
    for batch in loader:
        out.append(module.transfer_batch_to_device(batch, torch.device("cpu"), 0))
    return torch.cat([w for w, _ in out]), torch.cat([t for _, t in out])


def test_device_resident_and_streaming_give_the_same_batches():
    resident, waves, rows = make_module(1.0)
    streaming, _, _ = make_module(0.0)
    assert resident.device_resident and not streaming.device_resident
    for split in ("val", "test"):
        w1, t1 = collect(resident, resident._loader(split, shuffle=False))
        w2, t2 = collect(streaming, streaming._loader(split, shuffle=False))
        assert torch.equal(w1, w2) and torch.equal(t1, t2)
        assert torch.equal(w1, torch.from_numpy(waves[rows[split]]))


def test_train_batches_cover_every_clip_once_per_epoch_and_reshuffle():
    module, waves, rows = make_module(1.0)
    loader = module.train_dataloader()
    first, _ = collect(module, loader)
    second, _ = collect(module, loader)
    expected = set(waves[rows["train"], 0].tolist())
    assert set(first[:, 0].tolist()) == expected and len(first) == 12
    assert not torch.equal(first, second)  # a new order each epoch


def test_index_batches_are_seeded():
    a = [b.tolist() for b in IndexBatches(np.arange(10), 4, shuffle=True, seed=3)]
    b = [b.tolist() for b in IndexBatches(np.arange(10), 4, shuffle=True, seed=3)]
    assert a == b and len(a) == 3
