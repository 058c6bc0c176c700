"""report.html: escaped self-contained pages, every section from metrics.json, curves from TensorBoard logs,
and a real headless browser that decodes every embedded image."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from earmark.reports.curves import plot_training_curves, read_run_scalars, steps_to_epochs
from earmark.reports.html import html_image, html_pre, html_table, render_html
from earmark.reports.run import write_run_report

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(not CHROMIUM.is_file(), reason="no Chromium at /usr/bin/chromium")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
# Written into the DOM on window load: how many <img> decoded to a real bitmap, and how many there are.
IMAGE_PROBE = ("<script>window.addEventListener('load', () => { const images = Array.from(document.images);"
               "document.body.setAttribute('data-decoded', images.filter(i => i.complete && i.naturalWidth > 0)"
               ".length); document.body.setAttribute('data-images', images.length); });</script>")

SYNTHETIC_PNGS = ("confusion.png", "confusion_normalized.png", "per_class.png", "per_group_speaker.png", "roc.png",
                  "pr.png", "reliability.png", "coverage.png", "personalization.png", "extra_plot.png")
SYNTHETIC_METRICS = {
    "n_clips": 40, "accuracy": 0.8, "accuracy_ci95": [0.65, 0.9], "balanced_accuracy": 0.78,
    "macro_precision": 0.79, "macro_recall": 0.78, "macro_f1": 0.77, "weighted_precision": 0.8,
    "weighted_recall": 0.8, "weighted_f1": 0.79, "top_k_accuracy": {"3": 0.95},
    "per_class": {"cat<&>": {"precision": 0.9, "recall": 0.7, "f1": 0.79, "support": 20},
                  "dog": {"precision": 0.74, "recall": 0.9, "f1": 0.81, "support": 20}},
    "confusion": [[14, 6], [2, 18]], "labels": ["cat<&>", "dog"],
    "majority_baseline": {"label": "dog", "accuracy": 0.5, "balanced_accuracy": 0.5, "macro_f1": 0.33},
    "chance_accuracy": 0.5, "warnings": ["speaker s2 <b>scores</b> 30 points below the rest"],
    "binary": {"positive_label": "dog", "roc_auc": 0.91, "average_precision": 0.88, "threshold": 0.42,
               "threshold_metric": "f1", "at_threshold": {"precision": 0.8, "recall": 0.9, "f1": 0.85}},
    "per_group": {"speaker": {"groups": {"s1": {"n_clips": 20, "accuracy": 0.95}, "s2": {"n_clips": 20,
                                                                                      "accuracy": 0.65}},
                              "worst": ["s2"]}},
    "per_group_plots": {"speaker": "per_group_speaker.png"}, "notes": ["binary decision threshold 0.5: none chosen"],
    "clip_level": {"mean_probability": {"accuracy": 0.9, "macro_f1": 0.89, "n_files": 10},
                   "majority_vote": {"accuracy": 0.85, "macro_f1": 0.84, "n_files": 10}},
    "calibration": {"temperature": 1.7, "ece_before": 0.121, "ece_after": 0.034, "reject_threshold": 0.6,
                    "test_coverage": 0.9, "test_accuracy_on_accepted": 0.88},
}


def tiny_png(path: Path, seed: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot(np.random.default_rng(seed).normal(size=20))
    fig.savefig(path, dpi=50)
    plt.close(fig)
    return path


def write_events(folder: Path, scalars: dict[str, list[tuple[int, float]]]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(folder))
    for tag, points in scalars.items():
        for step, value in points:
            writer.add_scalar(tag, value, step)
    writer.close()


def browser(page: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    return subprocess.run([str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


def decoded_images(report: Path, tmp_path: Path) -> tuple[int, int]:
    """(images the browser decoded, images on the page) for a copy of the report with a probe script."""
    probe = tmp_path / f"probe-{report.parent.name}.html"
    probe.write_text(report.read_text().replace("</body>", IMAGE_PROBE + "</body>"))
    result = browser(probe, tmp_path, "--dump-dom", "--virtual-time-budget=10000")
    decoded = re.search(r'data-decoded="(\d+)"', result.stdout)
    total = re.search(r'data-images="(\d+)"', result.stdout)
    assert decoded and total, result.stdout[-2000:] + result.stderr[-2000:]
    return int(decoded.group(1)), int(total.group(1))


@pytest.fixture
def synthetic_evaluation(tmp_path):
    """An evaluation folder with every metrics key and plot, and a separate run folder with config and logs."""
    run_dir, out_dir = tmp_path / "run", tmp_path / "run" / "eval" / "other-site"
    out_dir.mkdir(parents=True)
    (out_dir / "metrics.json").write_text(json.dumps(SYNTHETIC_METRICS))
    for seed, name in enumerate(SYNTHETIC_PNGS):
        tiny_png(out_dir / name, seed)
    (run_dir / "config.yaml").write_text("model:\n  name: simple_cnn  # <not a tag>\n")
    write_events(run_dir / "tensorboard", {"train_loss": [(2, 1.2), (5, 0.8)], "val_acc": [(2, 0.5), (5, 0.7)],
                                           "epoch": [(2, 0), (5, 1)], "lr-AdamW": [(2, 1e-3), (5, 5e-4)]})
    write_events(run_dir / "adapt" / "tensorboard", {"train_loss": [(1, 0.6), (3, 0.4)], "epoch": [(1, 0), (3, 1)]})
    return run_dir, out_dir


def test_helpers_escape_and_embed(tmp_path):
    table = html_table([{"name": "<script>alert(1)</script>", "score": 0.123456, "n": 3}])
    assert "<script>" not in table and "&lt;script&gt;" in table
    assert "0.1235" in table and '<td class="num">3</td>' in table
    assert html_table([{"a": 1}, {"b": 2}]).count("<th>") == 2  # columns: the union, in first-seen order
    assert html_pre("a < b & c") == "<pre>a &lt; b &amp; c</pre>"
    assert html_image(tmp_path / "absent.png", "x") == ""
    png = tiny_png(tmp_path / "plot.png", 0)
    assert 'src="data:image/png;base64,iVBORw0KGgo' in html_image(png, 'a "quoted" alt')
    page = render_html("T <1>", ["look <here>"], [("First", "<p>one</p>"), ("Second", "<p>two</p>")])
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.index("look &lt;here&gt;") < page.index("First") < page.index("Second")
    assert 'id="warnings"' not in render_html("T", [], [("First", "")])


def test_markdown_tables_take_the_union_of_keys_and_escape_pipes():
    from earmark.reports.markdown import markdown_table

    table = markdown_table([{"run": "a|b", "accuracy": 0.123456}, {"run": "c", "epochs": 3}])
    assert table.splitlines() == ["| run | accuracy | epochs |", "|---|---|---|", "| a\\|b | 0.1235 |  |",
                                  "| c |  | 3 |"]
    assert markdown_table([{"x": 0.5}], float_format="{:.1f}").splitlines()[-1] == "| 0.5 |"


def test_every_section_renders_from_a_full_metrics_json(synthetic_evaluation):
    run_dir, out_dir = synthetic_evaluation
    page = write_run_report(out_dir, run_dir).read_text()
    headings = re.findall(r"<h2>(.*?)</h2>", page)
    assert headings == ["Test metrics", "Training curves", "Confusion", "Per class", "Per speaker",
                        "Binary: dog against the rest", "Clip level", "Calibration and rejection", "Personalization",
                        "Other plots", "Run", "Config (config.yaml)"]
    assert page.index("scores&lt;/b&gt; 30 points below") < page.index("<h2>Test metrics")  # warnings on top
    assert "0.650–0.900" in page and "top-3 accuracy" in page and "0.9500" in page  # CI and top-k
    accuracy_row = re.search(r"<tr><td>accuracy</td>(.*?)</tr>", page).group(1)
    assert "0.8000" in accuracy_row and accuracy_row.count("0.5000") == 2  # majority baseline and chance beside it
    assert "cat&lt;&amp;&gt;" in page and "cat<&>" not in page
    assert "Worst speakers: s2" in page and "ece_after" in page and "mean_probability" in page
    assert "threshold 0.5: none chosen" in page
    assert "The threshold is a recommendation" in page and "At the chosen threshold (if applied)" in page
    assert "&lt;not a tag&gt;" in page  # the config, escaped
    assert page.count("<img ") == len(SYNTHETIC_PNGS) + 1  # every plot plus the training curves
    assert (out_dir / "curves.png").is_file() and not (run_dir / "curves.png").exists()
    assert "<script" not in page and "<link" not in page and 'src="http' not in page  # self-contained


def test_absent_keys_leave_their_sections_out(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"accuracy": 0.5, "warnings": []}))
    page = write_run_report(tmp_path).read_text()
    assert re.findall(r"<h2>(.*?)</h2>", page) == ["Test metrics", "Run"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "metrics.json is missing" in write_run_report(empty).read_text()


def test_curves_read_every_phase_and_keep_the_last_value_of_a_repeated_step(synthetic_evaluation):
    run_dir, _ = synthetic_evaluation
    write_events(run_dir / "tensorboard", {"train_loss": [(5, 0.3)]})  # a resumed run logs step 5 again
    phases = read_run_scalars(run_dir)
    assert set(phases) == {"train", "adapt"}
    steps, values = phases["train"]["train_loss"]
    assert steps == [2, 5] and values[1] == pytest.approx(0.3)
    assert steps_to_epochs(phases["train"], [2, 5, 3]) == pytest.approx([1.0, 2.0, 4 / 3])
    assert steps_to_epochs({"train_loss": ([1], [0.1])}, [1]) is None
    assert plot_training_curves(run_dir, run_dir / "curves.png").stat().st_size > 5000
    assert plot_training_curves(run_dir / "adapt" / "nothing-here", run_dir / "none.png") is None


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from tiny_runs import train_tiny_run

    return train_tiny_run(tmp_path_factory.mktemp("report"), "report", max_epochs=2).run_dir


def test_a_real_run_gets_curves_from_its_logs(tiny_run, tmp_path):
    scalars = read_run_scalars(tiny_run)["train"]
    assert {"train_loss", "train_loss_step", "train_acc", "val_loss", "val_acc"} <= set(scalars)
    assert steps_to_epochs(scalars, scalars["val_loss"][0]) == pytest.approx([1.0, 2.0])
    page = write_run_report(tiny_run).read_text()
    assert (tiny_run / "curves.png").is_file()
    assert "Training curves" in page and "width: 4" in page and "confusion matrix" in page
    evaluation = tmp_path / "eval"  # an evaluation folder elsewhere: curves and config still come from the run
    evaluation.mkdir()
    for name in ("metrics.json", "confusion.png"):
        shutil.copy(tiny_run / name, evaluation / name)
    page = write_run_report(evaluation, tiny_run).read_text()
    assert "evaluation eval" in page and (evaluation / "curves.png").is_file() and "width: 4" in page


@needs_chromium
def test_a_browser_decodes_every_image_of_a_real_run_report(tiny_run, tmp_path):
    report = write_run_report(tiny_run)
    decoded, total = decoded_images(report, tmp_path)
    assert total >= 2 and decoded == total
    shot = tmp_path / "shot.png"
    browser(report, tmp_path, f"--screenshot={shot}", "--window-size=1000,1400")
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]  # (H, W, 3) in 0..1
    assert pixels.shape[:2] == (1400, 1000) and pixels.std() > 0.05  # something drawn, not a blank page


@needs_chromium
def test_a_browser_decodes_every_image_of_the_full_synthetic_report(synthetic_evaluation, tmp_path):
    run_dir, out_dir = synthetic_evaluation
    decoded, total = decoded_images(write_run_report(out_dir, run_dir), tmp_path)
    assert total == len(SYNTHETIC_PNGS) + 1 and decoded == total
    broken = out_dir / "report_broken.html"  # the probe can fail: a corrupt image is not counted
    broken.write_text(render_html("broken", [], [("x", '<img src="data:image/png;base64,AAAA" alt="x">')]))
    assert decoded_images(broken, tmp_path) == (0, 1)
