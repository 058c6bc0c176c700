"""`earmark inspect`: look at the data before training on it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from earmark.config import Config

AUGMENT_PREVIEW_CLIPS = 4
AUGMENT_FIT_CLIPS = 256  # training clips the preview's standardisation is fitted on


@dataclass
class InspectionSummary:
    text: str
    out_dir: Path
    facts: dict[str, Any]


def _describe(values) -> dict[str, float]:
    values = np.asarray(values, dtype=float)
    if not len(values):
        return {}
    return {"min": float(values.min()), "median": float(np.median(values)), "max": float(values.max())}


def plot_examples(waves: np.ndarray, labels: Sequence[str], frontend, path: Path) -> Path:
    """A grid with one example spectrogram (or waveform) per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    columns = min(len(labels), 5)
    rows = (len(labels) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows), squeeze=False)
    with torch.inference_mode():
        features = frontend(torch.from_numpy(np.asarray(waves, dtype=np.float32))).numpy()  # (n, 1, bins, frames)
    for ax, label, feature in zip(axes.flat, labels, features):
        if feature.ndim == 3 and feature.shape[1] > 1:
            ax.imshow(feature[0], origin="lower", aspect="auto", cmap="magma")
        else:
            ax.plot(feature.reshape(-1), linewidth=0.5)
        ax.set_title(str(label), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(labels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _preview_augmentations(config: Config, prepared, frontend, path: Path) -> dict[str, Any]:
    """Draw `path`: one training clip per class (up to AUGMENT_PREVIEW_CLIPS), clean and augmented."""
    import torch

    from earmark.augment import BatchAugmenter
    from earmark.reports.plots import plot_augmentations

    items = prepared.items
    train = items[items["split"] == "train"]
    pool = train if len(train) else items
    chosen = pool.drop_duplicates("label").head(AUGMENT_PREVIEW_CLIPS)
    if config.features.normalize:  # masks write 0, the mean of standardised features: show them that way
        fit_rows = np.sort(pool["row"].to_numpy()[:AUGMENT_FIT_CLIPS])
        frontend.fit_normalization([torch.from_numpy(np.asarray(prepared.cache.waves[fit_rows]))])
    augmenter = BatchAugmenter(config.augment, config.data.sample_rate_hz)
    plot_augmentations(prepared.cache.waves[chosen["row"].to_numpy()], frontend, augmenter,
                       chosen["label"].tolist(), path, torch.Generator().manual_seed(config.seed))
    return {"augment_png": str(path), "augmentations": augmenter.describe()}


def default_inspect_dir(config: Config, augment: bool) -> Path:
    """`runs_dir/inspect-<name>` where users look (not the hidden workspace), `-augment` for the preview,
    so a preview never overwrites the plain inspection. <name>: the config's name, else the data source
    and the data folder's or file's name."""
    from earmark.files import safe_name

    name = config.name or "-".join([config.data.source] + ([Path(config.data.path).stem]
                                                             if config.data.path is not None else []))
    return config.runs_dir / f"inspect-{safe_name(name, 'data')}{'-augment' if augment else ''}"


def inspect_data(config: Config | str | Path | None = None, overrides: Sequence[str] = (),
                 out_dir: Path | None = None, augment: bool = False) -> InspectionSummary:
    """Counts, durations, rates, bad files, example spectrograms and one batch's shapes, in `out_dir`.

    augment=True also draws `augment.png`: a few training clips before and after the configured augmentations.
    """
    import torch

    from earmark.augment import stack_views
    from earmark.config import as_config
    from earmark.features import build_frontend
    from earmark.models.registry import create_model
    from earmark.workflows.auto_candidates import single_model_config
    from earmark.workflows.prepare import prepare

    config = single_model_config(as_config(config, overrides))  # model.name=auto: its from-zero candidate's batch
    prepared = prepare(config)
    items, files = prepared.items, prepared.cache.files
    out_dir = Path(out_dir) if out_dir else default_inspect_dir(config, augment)
    out_dir.mkdir(parents=True, exist_ok=True)

    counts = items.groupby(["label", "split"]).size().unstack(fill_value=0)
    counts = counts.reindex(prepared.labels)
    examples = [items.loc[items["label"] == label, "row"].iloc[0] for label in prepared.labels]
    frontend = build_frontend(config.features, config.data.sample_rate_hz)
    plot_examples(prepared.cache.waves[examples], prepared.labels, frontend, out_dir / "spectrograms.png")

    batch = torch.from_numpy(np.asarray(prepared.cache.waves[items["row"].to_numpy()[: config.train.batch_size]]))
    features = frontend(batch)
    if config.features.stack_augmented:  # the model sees clean + augmented views: (B, 2, ...)
        features = stack_views(features, features)
    model = create_model(config.model.name, len(prepared.labels), tuple(features.shape[1:]), **config.model.params)
    logits = model.eval()(features)
    ok_files = files[files["status"] == "ok"] if "status" in files else files
    facts = {
        "files": int(len(files)),
        "clips": int(len(items)),
        "classes": len(prepared.labels),
        "class_counts": {str(k): {str(s): int(v) for s, v in row.items()} for k, row in counts.iterrows()},
        "duration_s": _describe(ok_files["duration_s"]),
        "sample_rates_hz": {str(k): int(v) for k, v in ok_files["orig_sample_rate_hz"].value_counts().items()},
        "channels": {str(k): int(v) for k, v in ok_files["channels"].value_counts().items()},
        "bad_files": prepared.cache.bad_files.to_dict(orient="records"),
        "batch_shapes": {"waves": list(batch.shape), "features": list(features.shape), "logits": list(logits.shape)},
        "split_dir": str(prepared.split_dir),
    }
    if augment:
        facts.update(_preview_augmentations(config, prepared, frontend, out_dir / "augment.png"))
    (out_dir / "summary.json").write_text(json.dumps(facts, indent=1))
    lines = [f"{facts['files']} files → {facts['clips']} clips in {facts['classes']} classes"]
    lines.append("clips per class and split:\n" + counts.to_string())
    duration = facts["duration_s"]
    if duration:
        lines.append(f"durations: min {duration['min']:.2f} s, median {duration['median']:.2f} s, "
                     f"max {duration['max']:.2f} s")
    lines.append(f"sample rates (Hz: files): {facts['sample_rates_hz']}; channels: {facts['channels']}")
    lines.append(f"bad files: {len(facts['bad_files'])}" + "".join(
        f"\n  {bad['path']}: {bad['reason']}" for bad in facts["bad_files"][:10]))
    shapes = facts["batch_shapes"]
    lines.append(f"one batch: waves {shapes['waves']} → features {shapes['features']} → logits {shapes['logits']}")
    if augment:
        enabled = ", ".join(facts["augmentations"]) or "none enabled"
        lines.append(f"augmentations ({enabled}): {facts['augment_png']}")
    lines.append(f"written to {out_dir}: spectrograms.png (examples), summary.json"
                 + (", augment.png" if augment else ""))
    return InspectionSummary("\n".join(lines), out_dir, facts)
