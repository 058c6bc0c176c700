"""Training throughput (clips/s): earmark's training step against the model-only ceiling, same shapes.

For each model, with the same batch size and clip length (default: batch 128, 5 s at 16 kHz):

1. ceiling    synthetic features already on the device: forward + backward + optimizer step only;
2. resident   earmark's training path through Lightning: device-resident waveform bank, index-batch
              gather, waveform augmentation (shift, gain, noise) and SpecAugment, front-end, model,
              loss, step (the real `AudioClassifier.training_step`, under a real Trainer);
3. streaming  the same, but batches read from a memory-mapped file by a DataLoader (workers, pinned
              memory when on a GPU), as when the clips exceed train.memory_budget_gb.

Each is timed over --steps steps after --warmup steps; ratios are against the ceiling measured in
the same run. The streaming file is fresh, so it sits in the page cache: that path is measured at
memory speed, not disk speed.

    python benchmarks/train_throughput.py [--batch 128] [--seconds 5] [--steps 3] [--device auto]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

SAMPLE_RATE_HZ = 16000
N_CLASSES = 10
MODELS = {"simple_cnn": "log_mel", "wave_cnn": "waveform"}  # the default --models
AUGMENT = {"shift_s": 0.1, "gain_db": 6.0, "noise_std": 0.005, "freq_masks": 2, "time_masks": 2}


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def feature_kind(model: str) -> str:
    """The front-end a registered model takes: log_mel for spectrogram models, else waveform."""
    from earmark.models.registry import MODELS as REGISTRY

    return "waveform" if REGISTRY.entry(model).input_kind == "waveform" else "log_mel"


def build_module(model: str, seconds: float):
    from earmark.config import FeaturesConfig, TrainConfig
    from earmark.contract import InputContract
    from earmark.train.module import AudioClassifier

    contract = InputContract(sample_rate_hz=SAMPLE_RATE_HZ, duration_s=seconds, clip="pad",
                             labels=tuple(str(i) for i in range(N_CLASSES)),
                             features=FeaturesConfig(kind=feature_kind(model)).model_dump())
    return AudioClassifier(contract.to_dict(), model, {}, TrainConfig(scheduler="none").model_dump(), AUGMENT)


def ceiling(model: str, batch: int, seconds: float, steps: int, warmup: int, device, precision: str) -> float:
    """Clips/s of forward + backward + AdamW step on features already on the device."""
    import torch
    import torch.nn.functional as F

    module = build_module(model, seconds)
    network = module.model.to(device).train()
    shape = module.frontend.output_shape(module.contract.n_samples)
    features = torch.randn(batch, *shape, device=device)
    targets = torch.randint(0, N_CLASSES, (batch,), device=device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16 if "bf16" in precision else torch.float16,
                              enabled=precision != "32-true")
    for step in range(warmup + steps):
        if step == warmup:
            synchronize(device)
            started = time.perf_counter()
        with autocast:
            loss = F.cross_entropy(network(features), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(device)
    return steps * batch / (time.perf_counter() - started)


def through_lightning(model: str, waves: np.ndarray, batch: int, steps: int, warmup: int, device, precision: str,
                      streaming: bool, workers: int) -> float:
    """Clips/s of earmark's training step under a Lightning Trainer (augmentation on)."""
    import lightning as L

    from earmark.data.batches import AudioDataModule

    class StepTimer(L.Callback):
        """The time at the end of the last warm-up step and of the last timed step."""

        def __init__(self) -> None:
            self.at_step: dict[int, float] = {}

        def on_train_batch_end(self, trainer, pl_module, outputs, batch_, batch_idx) -> None:
            if trainer.global_step in (warmup, warmup + steps):
                synchronize(device)
                self.at_step[trainer.global_step] = time.perf_counter()

    targets = np.arange(len(waves)) % N_CLASSES
    empty = np.arange(0)
    datamodule = AudioDataModule(waves, {"train": np.arange(len(waves)), "val": empty, "test": empty},
                                 {"train": targets, "val": empty, "test": empty}, batch_size=batch, seed=0,
                                 memory_budget_gb=0.0 if streaming else 1e6, num_workers=workers)
    timer = StepTimer()
    trainer = L.Trainer(max_steps=warmup + steps, accelerator=device.type, devices=1, precision=precision,
                        callbacks=[timer], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(build_module(model, len(waves[0]) / SAMPLE_RATE_HZ), datamodule=datamodule)
    assert datamodule.device_resident != streaming
    return steps * batch / (timer.at_step[warmup + steps] - timer.at_step[warmup])


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=5.0, help="clip length in seconds at 16 kHz")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda when there is one)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="DataLoader workers of the streaming path")
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="registered model names")
    args = parser.parse_args(argv)
    import lightning  # noqa: F401  (it sets its loggers' levels on import; quieten them after)

    for name in ("lightning.pytorch", "lightning.fabric"):  # no "GPU available" banners between the rows
        logging.getLogger(name).setLevel(logging.ERROR)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    precision = "bf16-mixed" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "32-true"
    n_samples = int(round(args.seconds * SAMPLE_RATE_HZ))
    n_clips = 2 * args.batch  # the bank: two batches' worth of clips
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else os.cpu_count()} "
          f"{'GPU' if device.type == 'cuda' else 'CPU cores'}), precision {precision}, batch {args.batch}, "
          f"clips {args.seconds:g} s at {SAMPLE_RATE_HZ} Hz, {args.steps} timed steps after {args.warmup}")
    waves = np.random.default_rng(0).uniform(-0.5, 0.5, (n_clips, n_samples)).astype(np.float32)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "waves.f32"
        waves.tofile(path)
        mapped = np.memmap(path, dtype=np.float32, mode="r", shape=waves.shape)
        print(f"{'model':<12}{'ceiling':>12}{'resident':>12}{'streaming':>12}{'resident/ceiling':>18}"
              f"{'streaming/ceiling':>19}   (clips/s)")
        for model in args.models:
            top = ceiling(model, args.batch, args.seconds, args.steps, args.warmup, device, precision)
            resident = through_lightning(model, waves, args.batch, args.steps, args.warmup, device, precision,
                                         streaming=False, workers=0)
            streamed = through_lightning(model, mapped, args.batch, args.steps, args.warmup, device, precision,
                                         streaming=True, workers=args.workers)
            print(f"{model:<12}{top:>12.1f}{resident:>12.1f}{streamed:>12.1f}{resident / top:>18.2f}"
                  f"{streamed / top:>19.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
