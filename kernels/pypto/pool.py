"""The pypto worker's side of a pool of NPU cards (`nightly.npu_pool` pins each pytest
worker to one card through the environment, which the pypto worker inherits). pypto's run
mode is passed to `pypto.frontend.jit` explicitly (`kernels.pypto.program.build_program`),
rather than guessed from the environment when pypto is imported.

Imports nothing of the suite: a kernel runs without it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

VISIBLE = "ASCEND_RT_VISIBLE_DEVICES"
ENV_CARD = "SPARSE_ATTN_NPU_CARD"  # set by nightly.npu_pool in a pinned process


def visible_cards(npu_count=None) -> int:
    """How many cards this process sees: torch_npu's count on a card, else the number of
    ids in `ASCEND_RT_VISIBLE_DEVICES` (simulation: the pool's fake ids)."""
    if npu_count is not None:
        return npu_count()
    return len([c for c in os.environ.get(VISIBLE, "").split(",") if c.strip()])


def pinned_card() -> str | None:
    """The card this process was pinned to (`nightly.npu_pool` sets both variables),
    checked to be the one card CANN will see; None outside a pool."""
    card = os.environ.get(ENV_CARD)
    if card is None:
        return None
    visible = os.environ.get(VISIBLE, "")
    if not re.fullmatch(r"\d+", visible) or visible != card:
        raise RuntimeError(f"pinned to card {card}, but {VISIBLE}={visible!r}")
    return card


def settle(workdir: Path, mode: str) -> str | None:
    """In the pypto worker process, before pypto runs: pypto's output folder inside this
    worker's private `workdir` (its default is named after the second it started, which two
    workers can share), and, in a pinned process, check that exactly the pinned card is
    visible. Returns the card, or None outside a pool."""
    os.environ["TILE_FWK_OUTPUT_DIR"] = str(workdir / "output")
    card = pinned_card()
    if card is None:
        return None
    if mode == "npu":
        import torch_npu

        seen = visible_cards(torch_npu.npu.device_count)
        if seen != 1:
            raise RuntimeError(f"pinned to card {card}, but torch_npu sees {seen} cards")
    return card
