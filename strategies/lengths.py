"""Per-batch start positions and the `seqused_kv` derived from them (contract section 4)."""

from __future__ import annotations

from hypothesis import assume
from hypothesis import strategies as st

from strategies.config import Config


def model_seqused(cfg: Config, start_pos: int) -> int:
    """`seqused_kv[b]` as the model wrappers write it, for a batch at `start_pos`.

    SWA (ratio 0): `min(WIN, L)`; HCA and CSA: `L` while `L <= WIN`, else
    `WIN + min(IDX_TOPK, L // ratio)`, with `L = start_pos + S`.
    """
    L = start_pos + cfg.S
    if cfg.ratio == 0:
        return min(cfg.WIN, L)
    if L <= cfg.WIN:
        return L
    return cfg.WIN + min(cfg.IDX_TOPK, L // cfg.ratio)


def n_compressed(cfg: Config, start_pos: int) -> int:
    """Compressed entries that exist once the batch's last token is written: `L // ratio`."""
    return 0 if cfg.ratio == 0 else (start_pos + cfg.S) // cfg.ratio


def max_start_pos(cfg: Config) -> int:
    """Far enough to wrap the window ring and to fill the compressed top-k."""
    return 2 * cfg.WIN + cfg.ratio * (cfg.IDX_TOPK + 2) + cfg.S


@st.composite
def start_positions(draw, cfg: Config, unwrapped: bool = False) -> tuple[int, ...]:
    """One start position per batch, shrinking towards 0 (an empty cache before this step).

    unwrapped: only positions whose window ring has not wrapped by the call's last token
    (`start_pos + S <= WIN`); a configuration with `S > WIN` is rejected.
    """
    hi = cfg.WIN - cfg.S if unwrapped else max_start_pos(cfg)
    assume(hi >= 0)
    return tuple(draw(st.integers(0, hi), label=f"start_pos[{b}]") for b in range(cfg.B))


@st.composite
def out_of_model_seqused(draw, cfg: Config) -> tuple[int, ...]:
    """`seqused_kv` values the model never writes: below `S` (tokens with no live key),
    exactly at the window, or with more compressed entries than `IDX_TOPK`."""
    hi = cfg.WIN + cfg.IDX_TOPK + cfg.S + 2
    return tuple(draw(st.integers(0, hi), label=f"seqused_kv[{b}]") for b in range(cfg.B))
