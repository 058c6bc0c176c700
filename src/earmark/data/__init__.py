"""Data: sources and metadata, audio decode and resample, the decode-once cache, splits, batches, labels."""
