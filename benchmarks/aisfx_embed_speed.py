"""Bundled embedder throughput on the CPU (aisfx, resemblyzer, crepe): PyTorch eager, against ONNX Runtime and real
time in the same run.

For 1-s and 5-s clips (random noise at the backbone's rate) in batches of --batch, on --threads threads, prints

    clips/s      embedder(wave) -> (B, D), front-end included; best of --rounds timed batches
    x real time  seconds of audio embedded per second of compute
    front-end    the share of the time spent in the mel front-end (the rest is the network)
    ONNX / torch the same batches through the dynamo-exported ONNX graph in onnxruntime (ratio: higher
                 is faster than torch)

aisfx (44.1 kHz): a 1-s clip costs one whole 100-frame block (2.3 s; it is padded), a 5-s clip three.
resemblyzer (16 kHz): a 1-s clip one 1.6-s partial (padded), a 5-s clip five (the LSTM runs 160 steps each).
crepe (16 kHz): one 1024-sample frame every 10 ms (101 frames a second) through the network.

    python benchmarks/aisfx_embed_speed.py [--model aisfx|resemblyzer|crepe] [--batch 32] [--threads 2] [--rounds 3]
        [--no-onnx]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import tempfile
import time
import warnings
from pathlib import Path

import torch

DURATIONS_S = (1.0, 5.0)


def load_embedder(model: str) -> tuple[torch.nn.Module, int]:
    """(the bundled embedder with its weights, in eval mode; its sample rate)."""
    if model == "aisfx":
        from earmark.models.aisfx import AisfxEmbedder, load_aisfx_weights
        from earmark.models.aisfx_frontend import SAMPLE_RATE_HZ

        return load_aisfx_weights(AisfxEmbedder()).eval(), SAMPLE_RATE_HZ
    if model == "crepe":
        from earmark.models.crepe import SAMPLE_RATE_HZ, CrepeEmbedder, load_crepe_weights

        return load_crepe_weights(CrepeEmbedder()).eval(), SAMPLE_RATE_HZ
    from earmark.models.resemblyzer import ResemblyzerEmbedder, load_resemblyzer_weights
    from earmark.models.resemblyzer_frontend import SAMPLE_RATE_HZ

    return load_resemblyzer_weights(ResemblyzerEmbedder()).eval(), SAMPLE_RATE_HZ


def frontend_of(embedder: torch.nn.Module):
    """The embedder's front-end: its `frontend` module (aisfx, resemblyzer), crepe's framing function."""
    if hasattr(embedder, "frontend"):
        return embedder.frontend
    from earmark.models.crepe import crepe_frames

    return crepe_frames


def n_units(embedder: torch.nn.Module, wave: torch.Tensor) -> int:
    """aisfx blocks, resemblyzer partials or crepe frames of one clip (the front-end's second axis)."""
    out = frontend_of(embedder)(wave[:1])
    return (out[0] if isinstance(out, tuple) else out).shape[1]


def best_seconds(fn, rounds: int) -> float:
    fn()  # warm-up: allocator, oneDNN kernels
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def onnx_session(embedder: torch.nn.Module, sample_rate_hz: int, path: Path, threads: int):
    import onnxruntime as ort

    dims = {"wave": {0: torch.export.Dim("batch", min=1), 1: torch.export.Dim("samples", min=1)}}
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.CRITICAL)
        program = torch.onnx.export(embedder, (torch.randn(2, 6 * sample_rate_hz),), None, input_names=["wave"],
                                    output_names=["embedding"], dynamic_shapes=dims, dynamo=True, verbose=False)
        logging.disable(logging.NOTSET)
    program.save(str(path), external_data=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("aisfx", "resemblyzer", "crepe"), default="aisfx")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-onnx", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    embedder, sample_rate_hz = load_embedder(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        session = None if args.no_onnx else onnx_session(embedder, sample_rate_hz, Path(tmp) / "embedder.onnx",
                                                         args.threads)
        print(f"{args.model} embeddings, batch {args.batch}, {args.threads} threads, torch {torch.__version__}, "
              f"best of {args.rounds}")
        print(f"{'clip':>6} {'units':>6} {'clips/s':>9} {'x real time':>11} {'front-end':>9} {'ONNX clips/s':>12} "
              f"{'ONNX / torch':>12}")
        for duration_s in DURATIONS_S:
            wave = torch.randn(args.batch, int(duration_s * sample_rate_hz), generator=torch.Generator().manual_seed(0))
            with torch.inference_mode():
                n_blocks = n_units(embedder, wave)
                total = best_seconds(lambda wave=wave: embedder(wave), args.rounds)
                frontend = best_seconds(lambda wave=wave: frontend_of(embedder)(wave), args.rounds)
            clips_per_s = args.batch / total
            line = (f"{duration_s:>5g}s {n_blocks:>6} {clips_per_s:>9.1f} {clips_per_s * duration_s:>11.1f} "
                    f"{frontend / total:>9.1%}")
            if session is not None:
                feed = {"wave": wave.numpy()}
                onnx_clips_per_s = args.batch / best_seconds(lambda feed=feed: session.run(None, feed), args.rounds)
                line += f" {onnx_clips_per_s:>12.1f} {onnx_clips_per_s / clips_per_s:>12.2f}"
            print(line)


if __name__ == "__main__":
    main()
