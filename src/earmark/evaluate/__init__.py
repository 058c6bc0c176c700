"""Evaluate: metrics, per-group analysis, binary decisions, calibration, paired statistics and run comparison.

Pure computations on labels, logits and probabilities; no model loading, no plotting."""
