"""Models: one registry and every family registered next to its definition; pretrained weights loading."""
