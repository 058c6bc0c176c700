"""earmark: from a pile of labelled sound files to a trustworthy, deployable audio classifier."""

__version__ = "0.1.0"
