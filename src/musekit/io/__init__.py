"""Checkpoint and file I/O: safetensors + JSON, atomic writes, strict loading."""
