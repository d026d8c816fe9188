"""The properties of calling convention v2 alone (docs/contract.md sections 8-11: per-token
physical window rows, compressed slot ids cut by `position_ids` and the compress ratio),
and the derived calls they make. They run on the kernels of the run that are v2 kernels."""
