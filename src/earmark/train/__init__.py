"""Train: the LightningModule, trainer assembly, checkpoints, losses, optimisers and the personalization phase."""
