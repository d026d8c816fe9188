"""Hypothesis strategies for calling convention v2 (contracts/v2.py): per-token positions,
physical window rows through a shared paged pool, indexer top-k rows cut by position and
ratio, whole calls (`cases`) and the corners they reach (`coverage`). The v1 draws of
dimensions, values, sinks and layouts are reused, not copied."""
