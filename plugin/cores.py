"""Sharing the machine's cores between xdist workers.

Each torch process uses every core for its intra-op threads by default; with `-n auto`
every worker does, and the threads spin against each other (measured on the 2-core
machine: one tiled-kernel call took 8 s with two workers of two threads each, 0.05 s with
one thread each). A worker gets its share of the cores instead."""

from __future__ import annotations

import os

import torch


def share_cores(config) -> int | None:
    """In an xdist worker, limit torch to `cores // workers` threads (at least 1); return
    the thread count set, or None outside a worker."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        return None
    workers = int(workerinput.get("workercount", 1))
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    torch.set_num_threads(threads)
    return threads
