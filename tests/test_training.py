"""The training recipe: losses, imbalance, optimisers and schedules, checkpoints, resume, overfit, DDP."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from conftest import TONES_HZ, tone_clip
from earmark import api
from earmark.config import TrainConfig
from earmark.errors import EarmarkError
from earmark.train.losses import ClassificationLoss, class_weights, focal_loss
from earmark.train.optim import build_optimizer, build_scheduler, check_schedule, param_groups

LABELS = ["a", "b", "c"]


def earmark(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "earmark", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "COLUMNS": "200"}, **kwargs)


def tiny_module(**train):
    from earmark.contract import InputContract
    from earmark.train.module import AudioClassifier

    contract = InputContract(sample_rate_hz=8000, duration_s=0.5, clip="pad", labels=tuple(LABELS),
                             features={"n_fft": 256, "n_mels": 32})
    return AudioClassifier(contract.to_dict(), "simple_cnn", {"width": 8}, TrainConfig(**train).model_dump())


def metrics_without_timing(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.pop("fit_seconds")
    return metrics


# --- losses and imbalance ----------------------------------------------------------------------------------

def test_focal_loss_is_cross_entropy_at_gamma_zero_and_down_weights_easy_clips():
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.2, 0.0, 0.1], [0.0, 3.0, 0.0]])
    targets = torch.tensor([0, 0, 2])
    weight = torch.tensor([1.0, 2.0, 0.5])
    expected = F.cross_entropy(logits, targets, weight=weight, reduction="none", label_smoothing=0.1)
    assert torch.allclose(focal_loss(logits, targets, 0.0, weight, 0.1), expected)
    cross_entropy = F.cross_entropy(logits, targets, reduction="none")
    ratio = focal_loss(logits, targets, 2.0) / cross_entropy
    p_target = torch.softmax(logits, dim=1)[torch.arange(3), targets]
    assert torch.allclose(ratio, (1 - p_target) ** 2)
    assert ratio[0] < 0.002  # confidently right: almost nothing left
    assert ratio[1] > 0.4 and ratio[2] > 0.9  # unsure or wrong: most of the loss stays
    assert ClassificationLoss("focal", 2.0)(logits, targets).shape == (3,)  # per clip, for mixing


def test_balanced_class_weights_are_inverse_to_training_counts():
    targets = np.array([0] * 6 + [1] * 3 + [2] * 1)
    weights = class_weights("balanced", LABELS, targets)
    assert np.allclose(np.array(weights) * [6, 3, 1], 10 / 3)  # n / (n_classes * count)
    assert class_weights({"c": 4.0}, LABELS, targets) == [1.0, 1.0, 4.0]
    assert class_weights("none", LABELS, targets) is None
    with pytest.raises(EarmarkError, match="unknown label.*'?d'?.*the labels are: a, b, c"):
        class_weights({"d": 2.0}, LABELS, targets)
    with pytest.raises(EarmarkError, match="none of: c"):
        class_weights("balanced", LABELS, np.array([0, 1, 1]))
    with pytest.raises(EarmarkError, match="c, which has no training clips"):
        class_weights({"c": 2.0}, LABELS, np.array([0, 1, 1]))


# --- optimisers and schedules ------------------------------------------------------------------------------

def test_param_groups_get_their_own_learning_rates():
    module = tiny_module(lr=1e-3, weight_decay=0.01,
                         param_groups=[{"prefix": "model.head", "lr": 1e-2, "weight_decay": 0.0},
                                       {"prefix": "model.features.0", "lr": 1e-4}])
    optimizer = build_optimizer(module, module.train_cfg)
    by_name = {group["name"]: group for group in optimizer.param_groups}
    assert by_name["model.head"]["lr"] == 1e-2 and by_name["model.head"]["weight_decay"] == 0.0
    assert by_name["model.features.0"]["lr"] == 1e-4 and by_name["model.features.0"]["weight_decay"] == 0.01
    assert by_name["default"]["lr"] == 1e-3
    head = {id(p) for p in module.model.head.parameters()}
    assert {id(p) for p in by_name["model.head"]["params"]} == head
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(module.parameters()))
    sgd = build_optimizer(module, TrainConfig(optimizer="sgd", momentum=0.8, nesterov=True))
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["nesterov"]


def test_a_param_group_prefix_that_matches_nothing_lists_the_module_names():
    module = tiny_module(param_groups=[{"prefix": "head", "lr": 1e-2}])
    with pytest.raises(EarmarkError, match=r"'head' matches no .*model\.features, model\.head"):
        param_groups(module, module.train_cfg)


def learning_rates(train: TrainConfig, total_steps: int) -> list[float]:
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=train.lr)
    scheduler = build_scheduler(optimizer, train, total_steps, "val_loss")["scheduler"]
    rates = []
    for _ in range(total_steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_warm_up_ramps_the_learning_rate_then_the_schedule_decays_it():
    rates = learning_rates(TrainConfig(lr=0.1, max_epochs=10, scheduler="cosine", warmup_epochs=2), 100)
    assert rates[0] == pytest.approx(0.1 / 20)
    assert all(b > a for a, b in zip(rates[:20], rates[1:20]))  # 20 warm-up steps, rising
    assert rates[19] == pytest.approx(0.1)
    assert all(b <= a for a, b in zip(rates[20:], rates[21:])) and rates[-1] < 0.001
    stepped = learning_rates(TrainConfig(lr=0.1, max_epochs=10, scheduler="step", step_size_epochs=4,
                                         step_gamma=0.5, warmup_epochs=1), 100)
    assert stepped[5] == pytest.approx(0.06) and stepped[10] == pytest.approx(0.1)
    assert stepped[45] == pytest.approx(0.05) and stepped[85] == pytest.approx(0.025)


def test_onecycle_keeps_its_new_length_when_a_resume_extends_training():
    model = torch.nn.Linear(2, 2)
    short = build_scheduler(torch.optim.SGD(model.parameters(), lr=0.1), TrainConfig(max_epochs=2), 20,
                            "val_loss")["scheduler"]
    longer = build_scheduler(torch.optim.SGD(model.parameters(), lr=0.1), TrainConfig(max_epochs=4), 40,
                             "val_loss")["scheduler"]
    longer.load_state_dict(short.state_dict())
    assert longer.total_steps == 40


def test_schedule_contradictions_are_caught_before_training():
    with pytest.raises(EarmarkError, match="warmup_epochs.*shorter than the training"):
        check_schedule(TrainConfig(max_epochs=3, warmup_epochs=3, scheduler="cosine"))
    with pytest.raises(EarmarkError, match="plateau"):
        check_schedule(TrainConfig(warmup_epochs=1, scheduler="plateau"))


def test_compile_and_channels_last_flags_reach_the_model():
    module = tiny_module(compile=True, channels_last=True)
    module.configure_model()  # what the Trainer calls before building optimisers
    assert module.model._compiled_call_impl is not None
    assert module.model.features[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    state = set(module.state_dict())
    assert "model.features.0.0.weight" in state and not any("_orig_mod" in key for key in state)
    assert tiny_module().model._compiled_call_impl is None


def test_stacked_views_make_the_model_take_two_channels():
    from earmark.contract import InputContract
    from earmark.train.module import AudioClassifier

    contract = InputContract(sample_rate_hz=8000, duration_s=0.5, clip="pad", labels=tuple(LABELS),
                             features={"n_fft": 256, "n_mels": 32, "stack_augmented": True})
    module = AudioClassifier(contract.to_dict(), "simple_cnn", {"width": 8}, TrainConfig().model_dump())
    assert module.model.features[0][0].in_channels == 2
    waves = torch.randn(3, 4000)
    assert module.features(waves).shape[1] == 2 and module.eval()(waves).shape == (3, 3)


# --- whole runs on tiny tones -----------------------------------------------------------------------------

def test_checkpoints_best_last_k_epochs_steps_and_accumulation(tone_config):
    result = api.train(tone_config, ["train.max_epochs=4", "train.save_last_k=2", "train.accumulate_grad_batches=2",
                                     "train.checkpoint_every_n_steps=3", "train.early_stopping_patience=null"])
    files = sorted(p.name for p in (result.run_dir / "checkpoints").iterdir())
    assert files == ["best.ckpt", "epoch002.ckpt", "epoch003.ckpt", "last.ckpt", "step000006.ckpt"]
    last = torch.load(result.run_dir / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert last["global_step"] == 4 * 2  # 3 batches an epoch, 2 accumulated per step: 2 steps an epoch
    assert last["epoch"] == 3


def test_without_a_validation_split_best_checkpoint_follows_train_loss(tone_config):
    result = api.train(tone_config, ["train.max_epochs=2", "split.val_fraction=0"])
    best = torch.load(result.run_dir / "checkpoints" / "best.ckpt", weights_only=False, map_location="cpu")
    monitors = {state["monitor"] for key, state in best["callbacks"].items() if key.startswith("ModelCheckpoint")}
    assert "train_loss" in monitors and not any(str(monitor).startswith("val") for monitor in monitors), monitors
    calibration = json.loads((result.run_dir / "calibration.json").read_text())
    assert not calibration["fitted"] and "no validation split" in calibration["reason"]


def test_building_a_trainer_prints_neither_device_facts_nor_advertising(tmp_path, caplog):
    import logging

    from earmark.config import load_config
    from earmark.train.trainer import build_trainer

    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        build_trainer(load_config(overrides=["train.progress=false"]), tmp_path, has_validation=True)
    messages = [record.getMessage() for record in caplog.records]
    assert not any("GPU available" in message for message in messages), messages  # issue 18: no device noise
    assert not any("litlogger" in message for message in messages), messages
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    assert not rank_zero.filters  # the filter was only there while the Trainer was built


def test_same_seed_same_metrics_and_streaming_matches_device_resident(tone_config):
    common = ["train.max_epochs=3", "train.deterministic=true", "augment.freq_masks=1", "augment.mixup_alpha=0.4"]
    first = api.train(tone_config, common + ["name=first"])
    second = api.train(tone_config, common + ["name=second"])
    streamed = api.train(tone_config, common + ["name=streamed", "train.memory_budget_gb=0"])
    assert first.metrics["device_resident"] and not streamed.metrics["device_resident"]
    reference = metrics_without_timing(first.run_dir)
    assert metrics_without_timing(second.run_dir) == reference
    reference.pop("device_resident")
    streamed_metrics = metrics_without_timing(streamed.run_dir)
    streamed_metrics.pop("device_resident")
    assert streamed_metrics == reference


@pytest.mark.slow
def test_overfit_batch_reaches_near_zero_loss_and_writes_no_run(tone_config, tmp_path):
    result = api.train(tone_config, ["train.max_epochs=60", "train.lr=0.01", "augment.mixup_alpha=0.4",
                                     "train.label_smoothing=0.2"], overfit_batch=True)
    check = result.metrics
    assert check["steps"] == 60 and check["passed"], check
    assert check["final_loss"] < 0.05 < check["first_loss"]
    assert result.run_dir is None and not (tmp_path / "runs").exists()
    failed = earmark("train", str(tone_config), "train.max_epochs=2", "train.lr=1e-6", "--overfit-batch",
                     cwd=tmp_path)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr[-2000:]
    assert "first loss" in failed.stdout and "final loss" in failed.stdout and "failed" in failed.stdout


def test_imbalance_settings_need_training_clips_of_every_class(tmp_path):
    root = tmp_path / "split_tones"
    for split, labels in (("train", ("low", "mid")), ("val", ("low", "mid", "high")), ("test", ("low", "mid", "high"))):
        for label in labels:
            (root / split / label).mkdir(parents=True)
            for take in range(3):
                sf.write(root / split / label / f"{take}.wav", tone_clip(TONES_HZ[label], 8000, 0.5, take), 8000)
    base = [f"runs_dir={tmp_path / 'runs'}", f"workspace={tmp_path / 'ws'}", "data.source=folder",
            f"data.path={root}", "data.sample_rate_hz=8000", "data.duration_s=0.5",
            f"data.cache_dir={tmp_path / 'cache'}", "data.workers=1", "features.n_fft=256", "features.n_mels=32",
            "train.progress=false"]
    with pytest.raises(EarmarkError, match="sampler=weighted.*none of: high"):
        api.train(None, base + ["train.sampler=weighted"])
    with pytest.raises(EarmarkError, match="class_weights=balanced.*none of: high"):
        api.train(None, base + ["train.class_weights=balanced"])
    with pytest.raises(EarmarkError, match="warmup_epochs"):
        api.train(None, base + ["train.max_epochs=2", "train.warmup_epochs=2", "train.scheduler=cosine"])
    assert not (tmp_path / "runs").exists()  # nothing started


def wait_for_mid_epoch_checkpoint(process: subprocess.Popen, checkpoints: Path, timeout_s: float = 120) -> None:
    """Until stepNNNNNN.ckpt exists and last.ckpt has been rewritten after it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        steps = sorted(checkpoints.glob("step*.ckpt"))
        last = checkpoints / "last.ckpt"
        try:
            if steps and last.stat().st_mtime_ns >= steps[0].stat().st_mtime_ns:
                return
        except FileNotFoundError:
            pass
        assert process.poll() is None, "training finished before a mid-epoch checkpoint was seen"
        time.sleep(0.005)
    raise AssertionError("no mid-epoch checkpoint appeared")


@pytest.mark.slow
def test_resume_after_kill_ends_exactly_like_an_uninterrupted_run(tone_config, tmp_path):
    # the whole recipe on: weighted sampling, class weights, focal loss, warm-up + cosine, waveform and
    # spectrogram augmentation, mixup, two stacked views; 5 batches an epoch, a checkpoint every 2 steps
    recipe = [str(tone_config), "train.max_epochs=5", "train.batch_size=4", "train.checkpoint_every_n_steps=2",
              "train.deterministic=true", "train.sampler=weighted", "train.class_weights=balanced",
              "train.loss=focal", "train.scheduler=cosine", "train.warmup_epochs=1", "augment.noise_std=0.01",
              "augment.freq_masks=1", "augment.time_masks=1", "augment.mixup_alpha=0.4",
              "features.stack_augmented=true", "train.early_stopping_patience=null"]
    full = earmark("train", *recipe, "name=full", cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]

    run = tmp_path / "runs" / "killed"
    process = subprocess.Popen([sys.executable, "-m", "earmark", "train", *recipe, "name=killed"], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_mid_epoch_checkpoint(process, run / "checkpoints")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert last["global_step"] % 5 != 0 and last["global_step"] < 25  # killed mid-epoch, mid-run
    assert not (run / "metrics.json").exists()

    # a resume with another config is refused before anything is touched
    before = {p.name: p.read_bytes() for p in (run / "checkpoints").glob("*.ckpt")}
    refused = earmark("train", *recipe, "train.lr=0.1", "augment.mixup_alpha=0.2", "--resume", str(run),
                      cwd=tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "train.lr" in refused.stderr and "augment.mixup_alpha" in refused.stderr
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").glob("*.ckpt")} == before

    resumed = earmark("train", "--resume", str(run), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert metrics_without_timing(run) == metrics_without_timing(tmp_path / "runs" / "full")
    weights = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")["state_dict"]
    reference = torch.load(tmp_path / "runs" / "full" / "checkpoints" / "last.ckpt", weights_only=False,
                           map_location="cpu")["state_dict"]
    assert sorted(p.name for p in (run / "checkpoints").glob("*.ckpt")) == sorted(
        p.name for p in (tmp_path / "runs" / "full" / "checkpoints").glob("*.ckpt"))
    assert weights.keys() == reference.keys()
    assert all(torch.equal(weights[key], reference[key]) for key in weights)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_writes_one_run(tone_config, tmp_path):
    result = earmark("train", str(tone_config), "train.strategy=ddp", "train.accelerator=cpu", "train.devices=2",
                     "train.max_epochs=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GLOBAL_RANK: 1" in result.stderr  # really two processes
    assert result.stdout.count("test accuracy:") == 1  # rank 0 alone evaluates and reports
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["tones"]
    metrics = json.loads((tmp_path / "runs" / "tones" / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and "accuracy" in metrics
