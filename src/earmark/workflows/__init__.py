"""Workflows: the only code that composes stages (prepare, train, evaluate, crossval, tune, inspect).

A run's plan is resolved here once and handed down; nothing below imports this package."""
