"""predictions.csv: one row per test clip with its probabilities; written and read back here."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from earmark.errors import EarmarkError

PREDICTIONS_FILE = "predictions.csv"


PROBABILITY_PREFIX = "p_"  # predictions.csv's probability columns: p_<label>


# read back as text, so a label "01" stays "01" and a label "NA" stays "NA"
PREDICTIONS_TEXT_COLUMNS = ("path", "true", "predicted", "group", "decision")


def predict_item_logits(predictor, items: pd.DataFrame, waves: np.ndarray) -> tuple[np.ndarray, list | None]:
    """Logits (N, C) of `items` (rows into `waves`), before temperature scaling, and the groups given to a
    personalized model (each clip's, e.g. its speaker; None for other models)."""
    groups = None
    if predictor.uses_groups:
        from earmark.data.labels import clip_groups

        groups = clip_groups(items, predictor.module.model.group_column)
    return predictor.predict_logits(waves[items["row"].to_numpy()], groups), groups


def predictions_table(items: pd.DataFrame, probabilities: np.ndarray, labels: Sequence[str],
                      groups: list | None, reject_threshold: float) -> pd.DataFrame:
    """path, true, predicted, [start_s], [group], [decision: predicted or 'unknown'], p_<label>..."""
    predicted = np.asarray(labels)[probabilities.argmax(axis=1)]
    table = pd.DataFrame({"path": items["path"].to_numpy(), "true": items["label"].to_numpy(),
                          "predicted": predicted})
    if "start_s" in items:
        table["start_s"] = items["start_s"].to_numpy()
    if groups is not None:
        table["group"] = groups
    if reject_threshold > 0:
        table["decision"] = np.where(probabilities.max(axis=1) >= reject_threshold, predicted, "unknown")
    columns = pd.DataFrame(probabilities.round(6), columns=[f"{PROBABILITY_PREFIX}{label}" for label in labels])
    return pd.concat([table, columns], axis=1)  # in one piece: a column at a time fragments it (1,000 classes)


def read_predictions(folder: Path) -> pd.DataFrame:
    """`folder/predictions.csv` as `predictions_table` wrote it: labels, paths and groups as text (never
    numbers or NaN), probabilities and start_s as numbers. Raises EarmarkError when the file or one of
    path/true/predicted is missing."""
    path = Path(folder) / PREDICTIONS_FILE
    if not path.is_file():
        raise EarmarkError(f"{path} is missing")
    table = pd.read_csv(path, dtype={column: "str" for column in PREDICTIONS_TEXT_COLUMNS}, keep_default_na=False)
    missing = [column for column in ("path", "true", "predicted") if column not in table]
    if missing:
        raise EarmarkError(f"{path} lacks the column(s) {', '.join(missing)}; it was not written by earmark")
    return table
