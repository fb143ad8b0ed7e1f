"""Bridges to other libraries' training loops: `sentence_transformers` (hybrid batches in its trainer)."""
