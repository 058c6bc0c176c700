"""Embed: pretrained backbones' clip embeddings, computed once per clip and cached beside the decoded audio."""
