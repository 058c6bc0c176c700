"""Labels and groups: natural sort, class ids, group names of clips."""

from __future__ import annotations

import re
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from earmark.errors import EarmarkError


def group_names(values: Sequence[Any] | pd.Series) -> list[Optional[str]]:
    """One name per clip, as str; NA (or blank) → None; whole floats lose their '.0' (3.0 → '3')."""
    series = pd.Series(values)
    if pd.api.types.is_float_dtype(series) and (series.dropna() % 1 == 0).all():
        series = series.astype("Int64")
    return [None if pd.isna(value) or not str(value).strip() else str(value).strip() for value in series]


def clip_groups(items: pd.DataFrame, column: str) -> list[Optional[str]]:
    """The group of every row of `items` from `column`; a clear error when the column is missing."""
    if column not in items.columns:
        raise EarmarkError(f"model.params.group_column='{column}' is not a column of the data; available: "
                           f"{', '.join(map(str, items.columns))}")
    return group_names(items[column])


def natural_key(text: str) -> list:
    """'2' < '10', 'dog' < 'rain': digits compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(text))]


def sorted_labels(labels) -> list[str]:
    return sorted({str(label) for label in labels}, key=natural_key)


def class_ids(values: Sequence[Any], labels: Sequence[str]) -> np.ndarray:
    """Class ids (N,) int64 of label values, compared as text with `labels` (whose order defines the ids).

    Raises EarmarkError naming the values that are not among `labels`."""
    from earmark.errors import EarmarkError

    index = {str(label): i for i, label in enumerate(labels)}
    text = [str(value) for value in values]
    unknown = sorted({value for value in text if value not in index})
    if unknown:
        raise EarmarkError(f"label(s) {', '.join(map(repr, unknown[:5]))} are not among the classes "
                           f"{', '.join(map(str, labels))}")
    return np.fromiter((index[value] for value in text), dtype=np.int64, count=len(text))
