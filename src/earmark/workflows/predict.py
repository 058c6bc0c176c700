"""Predict files, folders, CSV lists or a stream with a run, a checkpoint or an exported .onnx."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from earmark.errors import EarmarkError


def predict(run: str | Path, inputs: Sequence[str | Path], out: str | Path | None = None, *, top_k: int = 3,
            chunk_s: float | None = None, hop_s: float | None = None, device: str | None = None,
            groups: str | Sequence[str | None] | None = None, batch_size: int = 256, threads: int | None = None,
            trust_checkpoint: bool = False, timeline_out: str | Path | None = None, backend: str = "auto"):
    """Predict files, folders, CSV lists or "-" (paths on stdin) with a run, a .ckpt or an exported
    .onnx (onnxruntime only, no torch); writes `out`, and a timeline (one row per window) only when
    asked: to `timeline_out`, or to `<out stem>_timeline.csv` when `chunk_s` is given with `out`.
    A model trained with `clip: chunk` still labels a file from the mean over its own windows, and
    `result.timeline` holds them, but no timeline file is written unasked.

    groups (personalized models): one group (e.g. speaker) for every input, or one per resolved file;
    otherwise a CSV list's group column is used. Files without a known group get the base model.
    threads: CPU threads per prediction (onnxruntime's intra-op threads; torch's thread count).
    backend (a run directory): "auto" predicts on the CPU with the run's current ONNX export when it has
    one, which needs no torch (see `earmark.predict.run_export`); "torch": the checkpoint; "onnx": the
    export, or fail. `result.source` says which.
    """
    from earmark.data.metadata import COLUMN_ALIASES
    from earmark.predict.torch_predictor import load_predictor, resolve_grouped_inputs

    predictor = load_predictor(run, threads=threads, device=device, trust_checkpoint=trust_checkpoint,
                               backend=backend)
    if timeline_out is not None and chunk_s is None and predictor.contract.clip != "chunk":
        raise EarmarkError("--timeline-out needs windows: give --chunk-s (and --hop-s), or a model trained with "
                           "data.clip=chunk")
    columns = [predictor.group_column, *COLUMN_ALIASES["group"]] if predictor.uses_groups else []
    resolved = resolve_grouped_inputs(inputs, columns)
    paths = [path for path, _ in resolved]
    if groups is None and any(group is not None for _, group in resolved):
        groups = [group for _, group in resolved]
    result = predictor.predict_files(paths, top_k=top_k, chunk_s=chunk_s, hop_s=hop_s, groups=groups,
                                     batch_size=batch_size)
    result.source = predictor.source
    if out is not None and len(result.files):  # every input failed: no empty, header-less CSV
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        result.files.to_csv(out, index=False)
    if timeline_out is None and out is not None and chunk_s is not None:
        timeline_out = Path(out).with_name(Path(out).stem + "_timeline.csv")
    if timeline_out is not None and len(result.timeline):  # no windows: no empty file either
        result.timeline_path = Path(timeline_out)
        result.timeline_path.parent.mkdir(parents=True, exist_ok=True)
        result.timeline.to_csv(result.timeline_path, index=False)
    return result


def predict_stream(model: str | Path, source: str | Path = "-", *, chunk_s: float | None = None,
                   hop_s: float | None = None, stream_format: str = "wav", stream_rate_hz: int | None = None,
                   stream_channels: int = 1, threads: int | None = None, device: str | None = None,
                   trust_checkpoint: bool = False, backend: str = "auto"):
    """Predict a recording as it is read: iterating the returned `StreamPrediction` gives one
    {path, start_s, end_s, label, probability} per window (default: the model's clip length and hop)
    as soon as it completes, in bounded memory; its `summary()` then gives the recording's label.

    source: an audio file, or "-" for standard input: a WAV stream, or raw little-endian PCM
    (`stream_format` s16le/s32le/f32le at `stream_rate_hz` with `stream_channels` interleaved).
    backend: as for `predict`; `.predictor.source` says which model predicts.
    """
    from earmark.predict.streaming import StreamPrediction, file_blocks, stdin_blocks
    from earmark.predict.torch_predictor import load_predictor

    predictor = load_predictor(model, threads=threads, device=device, trust_checkpoint=trust_checkpoint,
                               backend=backend)
    if str(source) == "-":
        audio = stdin_blocks(stream_format, stream_rate_hz, stream_channels)
    else:
        audio = file_blocks(source)
    return StreamPrediction(predictor, audio, chunk_s, hop_s, path=str(source))
