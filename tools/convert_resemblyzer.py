"""Convert the Resemblyzer 0.1.4 wheel's pickled voice encoder into earmark's bundled safetensors file (run once).

    python tools/convert_resemblyzer.py /path/to/Resemblyzer-0.1.4-py3-none-any.whl

Reads `resemblyzer/pretrained.pt` from inside the wheel (never installing the package) with
`torch.load(weights_only=True)` (the file holds only tensors and plain values: it needs no allowed globals),
keeps the encoder (`lstm.*`, `linear.*`: the network `VoiceEncoder.forward` runs), drops the GE2E loss's
`similarity_weight`/`similarity_bias` (training only; the package loads with strict=False and ignores
them), the Adam state and the step counter, and writes `src/earmark/models/pretrained/resemblyzer.safetensors`,
which loads into `earmark.models.resemblyzer.VoiceEncoderNet` with strict=True. Prints the file's sha256,
which `earmark.models.resemblyzer.RESEMBLYZER_SHA256` must record.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file

CHECKPOINT_IN_WHEEL = "resemblyzer/pretrained.pt"
KEEP_PREFIXES = ("lstm.", "linear.")
OUT_PATH = (Path(__file__).resolve().parents[1] / "src" / "earmark" / "models" / "pretrained"
            / "resemblyzer.safetensors")
# one metadata key only: safetensors writes its metadata map in hash order, so several keys would make
# the file's bytes (and its sha256) differ from run to run
METADATA = {"source": "Resemblyzer 0.1.4 wheel, resemblyzer/pretrained.pt, model_state lstm.* and linear.*; "
                      "Apache-2.0, Copyright 2019 Resemble.AI"}


def read_checkpoint(wheel: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's `model_state`, read from inside the wheel with weights_only=True."""
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(CHECKPOINT_IN_WHEEL)
    checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    state = checkpoint["model_state"]
    print(f"read {CHECKPOINT_IN_WHEEL} ({len(data) / 1e6:.1f} MB, sha256 {hashlib.sha256(data).hexdigest()}): "
          f"{len(state)} tensors, step {checkpoint.get('step')}")
    return state


def encoder_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """lstm.* and linear.* as contiguous float32, names unchanged."""
    return {name: tensor.detach().clone().contiguous().float() for name, tensor in state.items()
            if name.startswith(KEEP_PREFIXES)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="Resemblyzer-0.1.4-py3-none-any.whl")
    parser.add_argument("--out", type=Path, default=OUT_PATH)
    args = parser.parse_args(argv)
    tensors = encoder_tensors(read_checkpoint(args.wheel))
    n_params = sum(t.numel() for t in tensors.values())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out), metadata=METADATA)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes, {len(tensors)} tensors, "
          f"{n_params:,} parameters)")
    print(f"sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
