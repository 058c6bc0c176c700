"""Fitting a probe's head on cached embeddings: logistic regression or a small MLP, in seconds.

The head standardises embeddings with statistics of the training split (`mean_`, `std_`), then:
- linear: scikit-learn's multinomial `LogisticRegression` (L-BFGS, C=1, class weights as configured),
  its coefficients copied into the head's `nn.Linear`;
- mlp: AdamW on full data in mini-batches, early-stopped on validation loss when there is a
  validation split (the best epoch's weights are kept), else a fixed number of epochs.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

LOGISTIC_C = 1.0
MLP_MAX_EPOCHS, MLP_FIXED_EPOCHS, MLP_PATIENCE = 300, 100, 25
MLP_BATCH, MLP_LR, MLP_WEIGHT_DECAY = 64, 1e-3, 1e-4
MIN_STD = 1e-3


def fit_head(head, x_train: np.ndarray, y_train: np.ndarray, x_val: Optional[np.ndarray] = None,
             y_val: Optional[np.ndarray] = None, *, n_classes: int, class_weights: Optional[list[float]] = None,
             seed: int = 0) -> dict[str, Any]:
    """Fit `head` (an `EmbeddingHead`) in place on embeddings (N, D) and class ids (N,); returns facts.
    A head with `members()` (a fusion's `AveragedHeads`) fits each member on its columns."""
    if hasattr(head, "members"):
        views = [fit_head(member, x_train[:, columns], y_train, None if x_val is None else x_val[:, columns], y_val,
                          n_classes=n_classes, class_weights=class_weights, seed=seed)
                 for member, columns in head.members()]
        return {"head": head.kind, "combine": "average", "views": views}
    mean = x_train.mean(axis=0)
    std = np.maximum(x_train.std(axis=0), MIN_STD)
    head.mean_.copy_(torch.from_numpy(mean))
    head.std_.copy_(torch.from_numpy(std))
    if head.kind == "linear":
        return _fit_logistic(head, (x_train - mean) / std, y_train, n_classes, class_weights, seed)
    standard_val = None if x_val is None or not len(x_val) else (x_val - mean) / std
    return _fit_mlp(head, (x_train - mean) / std, y_train, standard_val, y_val, class_weights, seed)


def _fit_logistic(head, x: np.ndarray, y: np.ndarray, n_classes: int, class_weights, seed: int) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression

    weights = None if class_weights is None else {i: float(w) for i, w in enumerate(class_weights)}
    model = LogisticRegression(C=LOGISTIC_C, max_iter=2000, class_weight=weights, random_state=seed)
    model.fit(x, y)
    coef = np.zeros((n_classes, x.shape[1]), np.float32)
    bias = np.zeros(n_classes, np.float32)
    if len(model.classes_) == 2 and model.coef_.shape[0] == 1:  # one decision function: split it in two logits
        low, high = model.classes_
        coef[low], coef[high] = -model.coef_[0] / 2, model.coef_[0] / 2
        bias[low], bias[high] = -model.intercept_[0] / 2, model.intercept_[0] / 2
    else:
        coef[model.classes_] = model.coef_
        bias[model.classes_] = model.intercept_
        absent = np.setdiff1d(np.arange(n_classes), model.classes_)
        bias[absent] = -1e4  # a class with no training clip is never predicted
    head.layers.weight.data.copy_(torch.from_numpy(coef))
    head.layers.bias.data.copy_(torch.from_numpy(bias))
    return {"head": "linear", "iterations": int(np.max(model.n_iter_))}


def _fit_mlp(head, x: np.ndarray, y: np.ndarray, x_val, y_val, class_weights, seed: int) -> dict[str, Any]:
    """On one thread: the matrices are tiny, and handing them between threads costs more than it saves (280
    clips × 1024 dims on a busy 2-core VM: 96 s on 2 threads, 4 s on 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_mlp_steps(head, x, y, x_val, y_val, class_weights, seed)
    finally:
        torch.set_num_threads(threads)


def _fit_mlp_steps(head, x: np.ndarray, y: np.ndarray, x_val, y_val, class_weights, seed: int) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    weight = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
    optimizer = torch.optim.AdamW(head.layers.parameters(), lr=MLP_LR, weight_decay=MLP_WEIGHT_DECAY)
    inputs, targets = torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(np.asarray(y, np.int64))
    validate = x_val is not None
    if validate:
        val_inputs = torch.from_numpy(np.asarray(x_val, np.float32))
        val_targets = torch.from_numpy(np.asarray(y_val, np.int64))
    best_loss, best_state, best_epoch, epoch = float("inf"), None, 0, 0
    for epoch in range(MLP_MAX_EPOCHS if validate else MLP_FIXED_EPOCHS):
        head.layers.train()
        for batch in torch.randperm(len(inputs), generator=generator).split(MLP_BATCH):
            optimizer.zero_grad()
            loss_fn(head.layers(inputs[batch]), targets[batch]).backward()
            optimizer.step()
        if validate:
            head.layers.eval()
            with torch.no_grad():
                val_loss = float(loss_fn(head.layers(val_inputs), val_targets))
            if val_loss < best_loss:
                best_loss, best_epoch = val_loss, epoch
                best_state = {k: v.clone() for k, v in head.layers.state_dict().items()}
            elif epoch - best_epoch >= MLP_PATIENCE:
                break
    if best_state is not None:
        head.layers.load_state_dict(best_state)
    head.layers.eval()
    return {"head": "mlp", "epochs": epoch + 1, "best_epoch": best_epoch + 1,
            "val_loss": best_loss if validate else None}
