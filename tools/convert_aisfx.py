"""Convert the aisfx 0.1.2 wheel's pickled checkpoint into earmark's bundled safetensors file (run once).

    python tools/convert_aisfx.py /path/to/aisfx-0.1.2-py2.py3-none-any.whl

Reads `aisfx/models/checkpoint.pth` from inside the wheel (never installing the package), keeps only the
embedding network (`embedding_net.*`, the 4-block CNN; the nine dataset heads `fc.*` are dropped), and
writes `src/earmark/models/pretrained/aisfx.safetensors` with the `embedding_net.` prefix removed, so it
loads into `earmark.models.aisfx.AisfxNet` with strict=True. Prints the file's sha256, which
`earmark.models.aisfx.AISFX_SHA256` must record.

The checkpoint is a pickle of (state_dict, {dataset: (np.int64 index, n_classes)}). It is read with
`torch.load(weights_only=True)`; the only non-tensor globals it needs are numpy's scalar/dtype
constructors for that dict, allowed by name below, so nothing in the file can run code.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

CHECKPOINT_IN_WHEEL = "aisfx/models/checkpoint.pth"
KEEP_PREFIX = "embedding_net."
OUT_PATH = Path(__file__).resolve().parents[1] / "src" / "earmark" / "models" / "pretrained" / "aisfx.safetensors"
# one metadata key only: safetensors writes its metadata map in hash order, so several keys would make
# the file's bytes (and its sha256) differ from run to run
METADATA = {"source": "aisfx 0.1.2 wheel, aisfx/models/checkpoint.pth, embedding_net only; "
                      "CC BY 4.0, (c) 2022 A.B. Ma and A. Lerch"}
NUMPY_SCALAR_GLOBALS = [(np._core.multiarray.scalar, "numpy.core.multiarray.scalar"), np.dtype,
                        np.dtypes.Int64DType]


def read_checkpoint(wheel: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's state dict, read from inside the wheel with weights_only=True."""
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(CHECKPOINT_IN_WHEEL)
    with torch.serialization.safe_globals(NUMPY_SCALAR_GLOBALS):
        state, datasets = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    print(f"read {CHECKPOINT_IN_WHEEL} ({len(data) / 1e6:.1f} MB): {len(state)} tensors, "
          f"{len(datasets)} dataset heads ({', '.join(datasets)})")
    return state


def embedding_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """embedding_net.* without the prefix; float tensors as contiguous float32, BN counters as they are."""
    kept = {}
    for name, tensor in state.items():
        if name.startswith(KEEP_PREFIX):
            tensor = tensor.detach().clone().contiguous()
            kept[name[len(KEEP_PREFIX):]] = tensor.float() if tensor.is_floating_point() else tensor
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="aisfx-0.1.2-py2.py3-none-any.whl")
    parser.add_argument("--out", type=Path, default=OUT_PATH)
    args = parser.parse_args(argv)
    tensors = embedding_tensors(read_checkpoint(args.wheel))
    n_params = sum(t.numel() for name, t in tensors.items() if t.is_floating_point() and "running_" not in name)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out), metadata=METADATA)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, {len(tensors)} tensors, "
          f"{n_params / 1e6:.2f} M parameters)")
    print(f"sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
