"""The run folder: its file names and layout in one place.

    runs/<name>/
      config.yaml        the resolved config (every result can be reproduced from it)
      labels.json        class names in class-id order
      splits/            train.csv, val.csv, test.csv: the clips of each split
      checkpoints/       best.ckpt, last.ckpt (and base.ckpt for personalized models)
      metrics.json, predictions.csv, calibration.json, report.md, report.html, *.png
      eval/<time>/       later evaluations;   export/   model.onnx and parity.json
      ensemble.json      an ensemble's members (run, sha256 of its best.ckpt, weight)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from earmark.config import Config, load_config
from earmark.contract import InputContract
from earmark.errors import EarmarkError

CONFIG_FILE = "config.yaml"
LABELS_FILE = "labels.json"
SPLITS_DIR = "splits"
CHECKPOINTS_DIR = "checkpoints"
BEST_CHECKPOINT, LAST_CHECKPOINT = "best.ckpt", "last.ckpt"
METRICS_FILE = "metrics.json"
REPORT_MD, REPORT_HTML = "report.md", "report.html"
EXPORT_DIR, EVAL_DIR = "export", "eval"
EXPORT_MODEL_FILE, EXPORT_PARITY_FILE = "model.onnx", "parity.json"  # in EXPORT_DIR
ENSEMBLE_FILE = "ensemble.json"


@dataclass(frozen=True)
class RunDir:
    """One run folder; every module asks it for a path instead of spelling the name."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def of_checkpoint(cls, checkpoint: Path) -> "RunDir | None":
        """The run that holds `checkpoint` (runs/<name>/checkpoints/x.ckpt), or None for a loose file."""
        checkpoint = Path(checkpoint)
        if checkpoint.parent.name != CHECKPOINTS_DIR:
            return None
        run = cls(checkpoint.parent.parent)
        return run if run.is_run() else None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def labels_file(self) -> Path:
        return self.path / LABELS_FILE

    @property
    def splits(self) -> Path:
        return self.path / SPLITS_DIR

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / BEST_CHECKPOINT

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / LAST_CHECKPOINT

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def ensemble_file(self) -> Path:
        return self.path / ENSEMBLE_FILE

    @property
    def export_dir(self) -> Path:
        return self.path / EXPORT_DIR

    def new_eval_dir(self) -> Path:
        return self.path / EVAL_DIR / datetime.now().strftime("%Y%m%d-%H%M%S")

    def is_run(self) -> bool:
        return self.config_file.is_file()

    def load_config(self) -> Config:
        if not self.is_run():
            raise EarmarkError(f"{self.path} is not a run directory (no {CONFIG_FILE})")
        return load_config(self.config_file)

    def config_matching(self, contract: InputContract, config: Config | None = None) -> Config:
        """config.yaml, checked against the input contract saved in the run's checkpoint: a config edited
        after training (another sample rate, clip length or front-end) would score audio the model never
        heard, so it is refused, naming each key that disagrees."""
        config = config if config is not None else self.load_config()
        differing = contract.disagreements(config.data.model_dump(), config.features.model_dump())
        if differing:
            raise EarmarkError(f"{self.config_file} disagrees with the model in its checkpoint ({'; '.join(differing)}); "
                               f"the checkpoint's input contract is what the model was trained on: set those keys "
                               f"back in {self.config_file} (or train a new run with the new settings)")
        return config

    def labels(self) -> list[str]:
        """The class names in class-id order; a damaged labels.json is one EarmarkError naming it."""
        try:
            labels = json.loads(self.labels_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise EarmarkError(f"{self.labels_file} is missing: the run is incomplete (train it again)") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise EarmarkError(f"{self.labels_file} is not a JSON list of class names ({type(exc).__name__}: "
                               f"{str(exc)[:120]}); restore it from a copy of the run, or train again") from None
        if not isinstance(labels, list) or not labels or not all(isinstance(x, (str, int)) for x in labels):
            raise EarmarkError(f"{self.labels_file} must hold a JSON list of class names; restore it from a copy "
                               f"of the run, or train again")
        return [str(label) for label in labels]

    def write_labels(self, labels: list[str]) -> None:
        self.labels_file.write_text(json.dumps(list(labels), indent=1))


def find_checkpoint(run_dir: Path, which: str = "best") -> Path:
    """The checkpoint to load from a run folder (`which`, else best, else last), or the .ckpt given."""
    run_dir = Path(run_dir)
    if run_dir.is_file() and run_dir.suffix == ".ckpt":
        return run_dir
    if not run_dir.is_dir():
        raise EarmarkError(f"run not found: {run_dir} (give a run directory such as runs/<name>, a .ckpt "
                           f"or an exported .onnx file)")
    for name in (f"{which}.ckpt", BEST_CHECKPOINT, LAST_CHECKPOINT):
        candidate = RunDir(run_dir).checkpoints / name
        if candidate.is_file():
            return candidate
    raise EarmarkError(f"{run_dir} holds no checkpoint (expected checkpoints/best.ckpt); was training interrupted?")


def new_output_dir(config: Config, suffix: str = "") -> Path:
    """A new folder `runs_dir/<name><suffix>` (`-1`, `-2`, ... appended when taken), created empty.

    The name is `config.name`, else `<source>-<model>-<time>`; suffix tells a CV (`-cv`) or tuning
    (`-tune`) folder from a run's."""
    name = config.name or f"{config.data.source}-{config.model.name}-{datetime.now():%Y%m%d-%H%M%S}"
    return new_folder(config.runs_dir, f"{name}{suffix}")


def new_folder(parent: Path, name: str) -> Path:
    """A new empty folder `parent/name`, or `parent/name-1`, `-2`, ... when taken; never an existing one."""
    out, number = Path(parent) / name, 1
    while out.exists():
        out, number = Path(parent) / f"{name}-{number}", number + 1
    out.mkdir(parents=True)
    return out
