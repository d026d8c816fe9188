"""Hypothesis strategies for calling convention v1 (contracts/v1.py): index rows (`rows`),
whole calls (`cases`) and the corners they reach (`coverage`). Dimensions, lengths, values,
pools, layouts, formats and the integer edges are drawn by the modules one level up, which
v2 shares."""
