"""Where a shrunk failure fails, as data the HTML report draws: the error over the
tolerance per (token, head), and per token its lanes (live or ignored, and the ones the
diagnosis blames). Kept small: a shrunk example has few tokens and lanes; past the size
drawn, the worst tokens and heads are kept (and the picture says it is cut)."""

from __future__ import annotations

import re

import torch

from sparse_attn_conformance.attention.attended import Attended

#: The most tokens, heads and lanes drawn.
MAX_TOKENS, MAX_HEADS, MAX_LANES = 64, 32, 128


def _worst(score: torch.Tensor, most: int) -> list[int]:
    """The indices of the `most` largest scores (all when fewer), in index order."""
    if score.numel() <= most:
        return list(range(score.numel()))
    return sorted(torch.topk(score, most).indices.tolist())


def blamed_lanes(diagnosis: dict | None) -> list[int]:
    """The lanes an explaining "lane-dropped" hypothesis names (its variants "lane j")."""
    for h in (diagnosis or {}).get("hypotheses", []):
        if h["explains"] and h["hypothesis"] == "lane-dropped":
            return sorted({int(m[1]) for v in h["variants"] if (m := re.fullmatch(r"lane (\d+)", v))})
    return []


def of(att: Attended, ratio: torch.Tensor, diagnosis: dict | None = None) -> dict:
    """The picture of one failing comparison: `ratio` `[*tokens, H]` (error / tolerance per
    output row) for the call `att`."""
    H, L = ratio.shape[-1], att.live.shape[-1]
    flat = ratio.reshape(-1, H).double().nan_to_num(float("inf"))
    live = att.live.reshape(-1, L)
    T = flat.shape[0]
    shape = [int(n) for n in att.live.shape[:-1]]
    # past the size drawn: the worst tokens and heads, in their order
    heads = _worst(flat.amax(dim=0), MAX_HEADS)
    tokens = []
    for t in _worst(flat.amax(dim=1), MAX_TOKENS):
        index = [int(i) for i in torch.unravel_index(torch.tensor(t), tuple(shape))] \
            if shape else []
        tokens.append({
            "token": " ".join(f"{n}={i}" for n, i in zip(att.token_dims, index, strict=True)),
            # JSON has no inf or NaN: a non-finite error is drawn as 1e30
            "ratios": [r if r <= 1e30 else 1e30 for r in flat[t, heads].tolist()],
            "lanes": "".join("1" if x else "0" for x in live[t, :MAX_LANES].tolist())})
    return {"heads": heads, "tokens": tokens, "lanes": min(L, MAX_LANES),
            "cut": T > MAX_TOKENS or H > MAX_HEADS or L > MAX_LANES,
            "blamed_lanes": blamed_lanes(diagnosis)}
