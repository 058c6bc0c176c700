import numpy as np
import pytest
import torch

from earmark.data.batches import AudioDataModule, IndexBatches
from earmark.errors import EarmarkError


def make_module(budget_gb, targets=None, **kwargs):
    waves = np.arange(20 * 4, dtype=np.float32).reshape(20, 4)  # row r holds 4r..4r+3
    rows = {"train": np.arange(0, 12), "val": np.arange(12, 16), "test": np.arange(16, 20)}
    targets = targets or {k: (v % 3).astype(np.int64) for k, v in rows.items()}
    module = AudioDataModule(waves, rows, targets, batch_size=5, seed=0, memory_budget_gb=budget_gb,
                             labels=["a", "b", "c"], **kwargs)
    return module, waves, rows


def collect(module, loader, limit=None):
    out = []
    for batch in loader:
        out.append(module.transfer_batch_to_device(batch, torch.device("cpu"), 0))
        if len(out) == limit:
            break
    return torch.cat([w for w, _ in out]), torch.cat([t for _, t in out])


def test_device_resident_and_streaming_give_the_same_batches():
    resident, waves, rows = make_module(1.0)
    streaming, _, _ = make_module(0.0)
    assert resident.device_resident and not streaming.device_resident
    for split in ("val", "test"):
        w1, t1 = collect(resident, resident._loader(split))
        w2, t2 = collect(streaming, streaming._loader(split))
        assert torch.equal(w1, w2) and torch.equal(t1, t2)
        assert torch.equal(w1, torch.from_numpy(waves[rows[split]]))
    # training batches come from the same index order on both paths
    w1, t1 = collect(resident, resident.train_dataloader())
    w2, t2 = collect(streaming, streaming.train_dataloader())
    assert torch.equal(w1, w2) and torch.equal(t1, t2)


def test_train_batches_cover_every_clip_once_per_epoch_and_reshuffle():
    module, waves, rows = make_module(1.0)
    loader = module.train_dataloader()
    first, _ = collect(module, loader)
    second, _ = collect(module, loader)
    expected = set(waves[rows["train"], 0].tolist())
    assert set(first[:, 0].tolist()) == expected and len(first) == 12
    assert not torch.equal(first, second)  # a new order each epoch


def test_index_batches_are_seeded():
    a = [b.tolist() for b in IndexBatches(np.arange(10), 4, "shuffle", seed=3)]
    b = [b.tolist() for b in IndexBatches(np.arange(10), 4, "shuffle", seed=3)]
    assert a == b and len(a) == 3


@pytest.mark.parametrize("budget_gb", [1.0, 0.0])
def test_a_loader_restored_mid_epoch_hands_out_the_remaining_batches(budget_gb):
    reference, _, _ = make_module(budget_gb)
    loader = reference.train_dataloader()
    collect(reference, loader)  # epoch 0
    epoch_1, _ = collect(reference, loader)

    interrupted, _, _ = make_module(budget_gb)
    loader = interrupted.train_dataloader()
    collect(interrupted, loader)
    head, _ = collect(interrupted, loader, limit=1)  # one batch of epoch 1, then "killed"
    state = interrupted.state_dict()  # what Lightning puts in the checkpoint
    assert state["train_batches"]["epoch"] == 1 and state["train_batches"]["position"] == 1

    resumed, _, _ = make_module(budget_gb)
    resumed.load_state_dict(state)  # a new process: Lightning restores the DataModule first
    tail, _ = collect(resumed, resumed.train_dataloader())
    assert torch.equal(torch.cat([head, tail]), epoch_1)


def test_a_state_saved_at_the_end_of_an_epoch_resumes_with_the_next_epoch():
    batches = IndexBatches(np.arange(10), 4, "shuffle", seed=1)
    epochs = [[b.tolist() for b in batches] for _ in range(3)]
    restored = IndexBatches(np.arange(10), 4, "shuffle", seed=1)
    restored.load_state_dict({"epoch": 1, "position": 3, "n_batches": 3, "seed": 1, "sampler": "shuffle"})
    assert [b.tolist() for b in restored] == epochs[2]


def test_a_state_from_another_batch_layout_is_refused():
    batches = IndexBatches(np.arange(10), 4, "shuffle", seed=1)
    with pytest.raises(EarmarkError, match="does not match"):
        batches.load_state_dict({"epoch": 0, "position": 1, "n_batches": 5, "seed": 1, "sampler": "shuffle"})


def test_ranks_get_disjoint_equal_shares_of_each_epoch():
    shares = [IndexBatches(np.arange(23), 4, "shuffle", seed=5, rank=r, world_size=2) for r in range(2)]
    assert len(shares[0]) == len(shares[1]) == 3  # 11 clips each: the epoch's last clip is dropped
    for _ in range(2):
        seen = [torch.cat(list(share)).tolist() for share in shares]
        assert len(seen[0]) == len(seen[1]) == 11
        assert not set(seen[0]) & set(seen[1])
    evaluation = [torch.cat(list(IndexBatches(np.arange(7), 4, rank=r, world_size=2))).tolist() for r in range(2)]
    assert sorted(evaluation[0] + evaluation[1]) == list(range(7))  # eval keeps every clip exactly once


def test_weighted_sampler_draws_a_rare_class_as_often_as_a_common_one():
    targets = np.array([0] * 90 + [1] * 10)
    rows = {"train": np.arange(100), "val": np.arange(0), "test": np.arange(0)}
    waves = np.zeros((100, 2), dtype=np.float32)
    module = AudioDataModule(waves, rows, {"train": targets, "val": targets[:0], "test": targets[:0]},
                             batch_size=10, seed=0, memory_budget_gb=1.0, sampler="weighted", labels=["common", "rare"])
    loader = module.train_dataloader()
    drawn = torch.cat([module.transfer_batch_to_device(b, torch.device("cpu"), 0)[1] for _ in range(20)
                       for b in loader])
    assert len(drawn) == 2000
    assert 0.45 < drawn.float().mean().item() < 0.55  # the rare class is 10% of clips, ~50% of draws


def test_weighted_sampler_needs_every_class_in_the_train_split():
    targets = {"train": np.array([0, 0, 1, 1] * 3), "val": np.array([2, 2, 2, 2]), "test": np.array([0, 1, 2, 0])}
    with pytest.raises(EarmarkError, match="none of: c"):
        make_module(1.0, targets=targets, sampler="weighted")


def test_overfit_loader_is_one_fixed_batch():
    module, _, _ = make_module(1.0, overfit=True)
    loader = module.train_dataloader()
    first, _ = collect(module, loader)
    second, _ = collect(module, loader)
    assert len(loader) == 1 and len(first) == 5 and torch.equal(first, second)
