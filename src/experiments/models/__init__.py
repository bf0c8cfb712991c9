"""Pretrained encoders: locating, loading and building them with a task head and optional adapter."""
