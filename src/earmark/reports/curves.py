"""Training curves from a run's TensorBoard logs: read the scalars, draw curves.png.

A run logs under runs/<name>/tensorboard/ (and a personalized run's second phase under
runs/<name>/adapt/tensorboard/); every folder holding event files is one training phase.
"""

from __future__ import annotations

from pathlib import Path

# Scalars Lightning logs that are bookkeeping, not curves ("epoch" turns steps into epochs).
SKIPPED_TAGS = ("hp_metric",)
EPOCH_TAG = "epoch"
EVENT_GLOB = "events.out.tfevents*"


def event_folders(run_dir: Path) -> dict[str, Path]:
    """{phase name: folder with event files}; the main phase is "train", others their sub-folder name."""
    folders = sorted({path.parent for path in Path(run_dir).rglob(EVENT_GLOB)})
    phases: dict[str, Path] = {}
    for folder in folders:
        parts = [part for part in folder.relative_to(run_dir).parts if part != "tensorboard"]
        phases["/".join(parts) or "train"] = folder
    return phases


def read_scalars(folder: Path) -> dict[str, tuple[list[int], list[float]]]:
    """{tag: (steps, values)} of one event folder, sorted by step; a step logged twice (a resumed
    run repeats the steps after its last checkpoint) keeps its last value."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every point
    accumulator.Reload()
    scalars: dict[str, tuple[list[int], list[float]]] = {}
    for tag in accumulator.Tags().get("scalars", []):
        if tag in SKIPPED_TAGS:
            continue
        # the latest write wins: event files sort by whole seconds and a counter, so two written within a second
        # (a quick resume) can be read out of order; each event's wall_time cannot
        events = sorted(accumulator.Scalars(tag), key=lambda event: event.wall_time)
        by_step = {int(event.step): float(event.value) for event in events}
        steps = sorted(by_step)
        scalars[tag] = (steps, [by_step[step] for step in steps])
    return scalars


def read_run_scalars(run_dir: Path) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """{phase: {tag: (steps, values)}} for every training phase of a run (empty without logs)."""
    return {phase: scalars for phase, folder in event_folders(Path(run_dir)).items()
            if (scalars := read_scalars(folder))}


def steps_to_epochs(scalars: dict[str, tuple[list[int], list[float]]], steps: list[int]) -> list[float] | None:
    """Epochs completed at each global step (epoch k's last step maps to k + 1, steps between
    interpolate), from Lightning's "epoch" scalar; None when the phase did not log it."""
    import numpy as np

    if EPOCH_TAG not in scalars:
        return None
    last_step_of: dict[int, int] = {}
    for step, epoch in zip(*scalars[EPOCH_TAG]):
        last_step_of[int(epoch)] = max(step, last_step_of.get(int(epoch), step))
    ends = sorted(last_step_of.items())
    known_steps = [0] + [step + 1 for _, step in ends]
    known_epochs = [0] + [epoch + 1 for epoch, _ in ends]
    return np.interp(np.asarray(steps) + 1, known_steps, known_epochs).tolist()


def _panel_of(tag: str) -> str:
    if "loss" in tag:
        return "loss"
    if tag.startswith("lr") or "learning_rate" in tag:
        return "learning rate"
    return "metrics"


def plot_training_curves(run_dir: Path, path: Path) -> Path | None:
    """curves.png: one row per phase, panels loss / metrics / learning rate against the epoch
    (the global step when the logs hold no "epoch" scalar).

    Returns None (and writes nothing) when the run has no logged scalars.
    """
    phases = read_run_scalars(Path(run_dir))
    if not phases:
        return None
    from matplotlib.ticker import MaxNLocator

    from earmark.reports.plots import pyplot, save_figure

    plt = pyplot()
    panel_names = [name for name in ("loss", "metrics", "learning rate")
                   if any(_panel_of(tag) == name for scalars in phases.values() for tag in scalars
                          if tag != EPOCH_TAG)]
    fig, axes = plt.subplots(len(phases), len(panel_names), squeeze=False,
                             figsize=(4.6 * len(panel_names), 3.3 * len(phases)))
    for row, (phase, scalars) in enumerate(phases.items()):
        for column, panel in enumerate(panel_names):
            ax = axes[row, column]
            for tag, (steps, values) in sorted(scalars.items()):
                if tag == EPOCH_TAG or _panel_of(tag) != panel:
                    continue
                epochs = steps_to_epochs(scalars, steps)
                per_step = tag.endswith("_step")  # noisy per-batch values: thin and faint behind the epoch means
                ax.plot(steps if epochs is None else epochs, values, label=tag, linewidth=0.7 if per_step else 1.6,
                        alpha=0.45 if per_step else 1, marker=None if per_step or len(steps) > 40 else "o",
                        markersize=3)
            ax.set_title(f"{phase}: {panel}" if len(phases) > 1 else panel)
            ax.set_xlabel("step" if EPOCH_TAG not in scalars else "epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if panel == "learning rate":
                ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
            if ax.lines:
                ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path, dpi=100)
