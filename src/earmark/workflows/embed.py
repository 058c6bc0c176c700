"""`earmark embed` and `earmark audit`: a pretrained backbone's embeddings of the data, and likely mislabels.

Both decode once and embed once (the embedding cache of `earmark.embed`), so after a probe run on the
same data they compute nothing new.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from earmark.config import Config, as_config
from earmark.errors import EarmarkError

INDEX_COLUMNS = ("path", "label", "split", "group", "fold", "segment", "start_s", "end_s")
SUSPECTS_FILE = "suspect_labels.csv"
AUDIT_FOLDS = 5
AUDIT_C = 0.01  # a strongly regularised probe: it does not learn the flipped labels it is meant to find
AUDIT_PCA_DIMS = 128  # embeddings are reduced to this many principal components of the training part
MIN_AUDIT_ACCURACY = 0.7  # below this out-of-fold accuracy the probe is too weak to judge anyone's label


@dataclass
class EmbedResult:
    out: Path  # the embeddings (.npy, .csv or .parquet)
    index: Path | None  # with .npy: the CSV naming each row's clip
    n_clips: int
    dim: int
    embedded_now: int  # 0 when every clip came from the cache


@dataclass
class AuditResult:
    suspects: pd.DataFrame  # path, label, suggested, p_label, p_suggested (most suspicious first)
    out_dir: Path
    n_audited: int
    oof_accuracy: float = float("nan")  # the out-of-fold probe's accuracy against the given labels
    too_weak: str | None = None  # why nothing is listed: the probe cannot tell good labels from bad


def embedded_data(config: Config, *, strict: bool = False, progress: bool = True):
    """(prepared data, the backbone model, vectors (n_cache_rows, D), how many were embedded now)."""
    from earmark.data.prepared import prepare_data
    from earmark.embed.cache import cached_model_embeddings
    from earmark.models.registry import create_model
    from earmark.workflows.plan import plan_model

    plan = plan_model(config)
    config = plan.config
    if plan.entry.rate_for(config.model.params) is None:
        raise EarmarkError(f"model '{config.model.name}' is not a pretrained embedder; choose one such as "
                           f"model.name=aisfx")
    prepared = prepare_data(config, strict=strict, progress=progress)
    n_samples = int(round(config.data.duration_s * config.data.sample_rate_hz))
    model = create_model(config.model.name, len(prepared.labels), (1, n_samples), **config.model.params)
    vectors, computed = cached_model_embeddings(model, prepared.cache.waves, prepared.items["row"].to_numpy(),
                                          prepared.cache.directory, progress=progress)
    return prepared, model, vectors, computed


def embed(config: Config | str | Path | None, overrides: Sequence[str], out: str | Path, *, strict: bool = False,
          progress: bool = True) -> EmbedResult:
    """Write one embedding per clip to `out`: .npy (+ `<out>.csv` index), .csv or .parquet (index columns
    then e0..e<D-1>)."""
    out = Path(out)
    if out.suffix.lower() not in (".npy", ".csv", ".parquet"):
        raise EarmarkError(f"--out {out}: give a .npy (with an index CSV beside it), .csv or .parquet file")
    prepared, model, vectors, computed = embedded_data(as_config(config, overrides), strict=strict,
                                                       progress=progress)
    items = prepared.items
    index = items[[c for c in INDEX_COLUMNS if c in items]].reset_index(drop=True)
    clip_vectors = vectors[items["row"].to_numpy()]
    out.parent.mkdir(parents=True, exist_ok=True)
    index_path = None
    if out.suffix.lower() == ".npy":
        np.save(out, clip_vectors)
        index_path = out.with_suffix(".csv")
        index.to_csv(index_path, index=False)
    else:
        table = pd.concat([index, pd.DataFrame(clip_vectors, columns=[f"e{i}" for i in range(clip_vectors.shape[1])])],
                          axis=1)
        if out.suffix.lower() == ".csv":
            table.to_csv(out, index=False)
        else:
            try:
                table.to_parquet(out, index=False)
            except ImportError:
                raise EarmarkError("writing .parquet needs pyarrow (pip install pyarrow); or use --out x.npy") from None
    return EmbedResult(out, index_path, len(index), int(clip_vectors.shape[1]), int(computed))


def out_of_fold_probabilities(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None, n_classes: int,
                              folds: int = AUDIT_FOLDS, seed: int = 0) -> np.ndarray:
    """(N, C) probabilities of each clip from a probe that never saw it (stratified, grouped folds): the
    training part standardised, reduced to AUDIT_PCA_DIMS principal components, then a logistic regression
    with C=AUDIT_C. Measured with 10 % injected flips on mridangam (ungrouped, 5 folds): C=1 on all 1,024
    dimensions learned the flips (precision 0.51); this probe reached precision 0.80, recall 0.93."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    smallest = int(np.bincount(y, minlength=n_classes)[np.unique(y)].min())
    k = max(2, min(folds, smallest))
    splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed) if groups is not None else \
        StratifiedKFold(k, shuffle=True, random_state=seed)
    probabilities = np.zeros((len(y), n_classes))
    for train, held_out in splitter.split(x, y, groups):
        mean, std = x[train].mean(0), np.maximum(x[train].std(0), 1e-3)
        pca = PCA(min(AUDIT_PCA_DIMS, len(train) - 1, x.shape[1]), random_state=seed).fit((x[train] - mean) / std)
        probe = LogisticRegression(C=AUDIT_C, max_iter=2000, random_state=seed)
        probe.fit(pca.transform((x[train] - mean) / std), y[train])
        probabilities[np.ix_(held_out, probe.classes_)] = probe.predict_proba(pca.transform((x[held_out] - mean) / std))
    return probabilities


def find_label_issues(probabilities: np.ndarray, y: np.ndarray) -> np.ndarray:
    """cleanlab's `find_label_issues` (confident learning, Northcutt et al. 2021; prune by noise rate) on
    out-of-fold probabilities (N, C) and given class ids (N,): a boolean mask of likely mislabels. Replaces
    earmark's hand-written rule, which on the same injected flips found fewer (mridangam, 10 % flips:
    recall 0.80 against cleanlab's 0.93 at precision 0.85 against 0.80; FSDD: 0.78 against 0.93 at 0.90
    against 0.82; benchmarks/honesty.py)."""
    from cleanlab.filter import find_label_issues as cleanlab_issues

    return np.asarray(cleanlab_issues(labels=np.asarray(y), pred_probs=np.asarray(probabilities)), dtype=bool)


def audit(config: Config | str | Path | None, overrides: Sequence[str], out_dir: str | Path | None = None, *,
          folds: int = AUDIT_FOLDS, progress: bool = True) -> AuditResult:
    """List training (and validation) clips whose label disagrees with out-of-fold predictions of a probe on
    the backbone's embeddings, most confident disagreement first, in `<out_dir>/suspect_labels.csv`."""
    from earmark.data.labels import class_ids
    from earmark.rundir import new_folder

    config = as_config(config, overrides)
    prepared, _, vectors, _ = embedded_data(config, progress=progress)
    items = prepared.items[prepared.items["split"] != "test"].reset_index(drop=True)
    y = class_ids(items["label"], prepared.labels)
    group_column = config.split.group_by
    groups = items[group_column].astype(str).to_numpy() if group_column and group_column in items else None
    probabilities = out_of_fold_probabilities(vectors[items["row"].to_numpy()], y, groups, len(prepared.labels),
                                              folds, config.seed)
    oof_accuracy = float((probabilities.argmax(axis=1) == y).mean()) if len(y) else float("nan")
    too_weak = None
    if not oof_accuracy >= MIN_AUDIT_ACCURACY:
        too_weak = (f"the out-of-fold probe agrees with only {oof_accuracy:.2f} of the labels (below "
                    f"{MIN_AUDIT_ACCURACY}): too weak to tell a wrong label from a hard clip, so none is listed; "
                    f"more clips per class or a backbone that suits these sounds helps")
        suspect = np.zeros(len(y), bool)
    else:
        suspect = find_label_issues(probabilities, y)
    suggested = probabilities.argmax(axis=1)
    labels = np.asarray(prepared.labels, dtype=object)
    table = pd.DataFrame({"path": items["path"], "label": items["label"].astype(str),
                          "suggested": labels[suggested], "p_label": probabilities[np.arange(len(y)), y],
                          "p_suggested": probabilities[np.arange(len(y)), suggested]})
    if "segment" in items:
        table.insert(1, "segment", items["segment"])
    table = table[suspect].sort_values("p_label", kind="stable").reset_index(drop=True)
    out = Path(out_dir) if out_dir else new_folder(config.runs_dir, f"audit-{datetime.now():%Y%m%d-%H%M%S}")
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / SUSPECTS_FILE, index=False)
    return AuditResult(table, out, len(items), oof_accuracy, too_weak)
