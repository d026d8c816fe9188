"""Window rows (`window_swa_indices`): the producer upstream's model uses, the ori block
tables it reads, and adversarial rows.

The producer (`window_rows`) mirrors `decode_metadata.swa_indices_and_lens`: row `t` holds
the physical flat rows of positions `max(0, pos - WIN + 1) .. pos`, oldest first, `-1`
padded, through an ori block table with absolute logical columns (`pos // BLOCK`).

Ori block tables (`ori_block_tables`) map every batch into ONE shared pool, interleaving the
requests' pages in a random order with spare blocks between them, so consecutive logical
pages are rarely adjacent physically. Only the columns some window reads get a block, so a
position near 2^31 costs a few blocks; a table too wide to hold densely is a sparse mapping
`{batch: {column: block}}` (missing columns are unmapped), which `window_rows` also takes.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from hypothesis import strategies as st

from sparse_attn_conformance.contracts.v2 import INT32_MAX
from sparse_attn_conformance.strategies.lengths import TABLE_ENTRY_COST
from sparse_attn_conformance.strategies.pools import INT32_MIN, garbage_ids

#: A block table: dense `[B, cols]` int32, or sparse `{b: {column: block}}`.
Table = torch.Tensor | Mapping[int, Mapping[int, int]]


def _check_positions(position_ids, seq_per_batch: int) -> torch.Tensor:
    if not isinstance(position_ids, torch.Tensor) or position_ids.dim() not in (1, 2) or (
            position_ids.dim() == 2 and position_ids.shape[1] != 1):
        raise ValueError(f"position_ids: expected a [T, 1] (or [T]) integer tensor, got "
                         f"{getattr(position_ids, 'shape', type(position_ids).__name__)}")
    pos = position_ids.reshape(-1).to(torch.int64)
    if not isinstance(seq_per_batch, int) or seq_per_batch < 1 or pos.numel() % seq_per_batch:
        raise ValueError(f"seq_per_batch: expected an int >= 1 dividing T={pos.numel()}, "
                         f"got {seq_per_batch!r}")
    if bool((pos < 0).any()):
        raise ValueError(f"position_ids: expected every position >= 0, got {int(pos.min())}")
    return pos


def lookup(table: Table, batch: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """Physical block ids (int64) of logical columns `col` of batches `batch` (same shape);
    `-1` where the column is past the table, unmapped or negative."""
    if isinstance(table, torch.Tensor):
        t = table.to(torch.int64)
        inside = col < t.shape[1]
        blk = t[batch, col.clamp(max=t.shape[1] - 1)]
        return torch.where(inside & (blk >= 0), blk, -1)
    if not isinstance(table, Mapping):
        raise ValueError(f"ori_block_table: expected a [B, cols] int tensor or a mapping "
                         f"{{batch: {{column: block}}}}, got {type(table).__name__}")
    pairs = torch.stack([batch.reshape(-1), col.reshape(-1)], dim=1)
    uniq, inverse = torch.unique(pairs, dim=0, return_inverse=True)
    ids = [table.get(int(b), {}).get(int(c), -1) for b, c in uniq.tolist()]
    blk = torch.tensor(ids, dtype=torch.int64)[inverse].reshape(col.shape)
    return torch.where(blk >= 0, blk, -1)


def window_rows(position_ids: torch.Tensor, ori_block_table: Table, seq_per_batch: int,
                window_size: int, block: int) -> torch.Tensor:
    """The producer: `window_swa_indices` `[T, window_size]` int32. Row `t` lists the
    physical flat rows `table[b, p // block] * block + p % block` of positions
    `p = max(0, pos - window_size + 1) .. pos` oldest first, then `-1`; a position whose
    column is past the table, unmapped or negative gives `-1` (section 3.5)."""
    pos = _check_positions(position_ids, seq_per_batch)
    for name, v in (("window_size", window_size), ("block", block)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
    if isinstance(ori_block_table, torch.Tensor) and (
            ori_block_table.dim() != 2 or ori_block_table.dtype.is_floating_point
            or ori_block_table.shape[0] != pos.numel() // seq_per_batch):
        raise ValueError(f"ori_block_table: expected an integer tensor [B={pos.numel() // seq_per_batch}"
                         f", cols], got {ori_block_table.dtype} {tuple(ori_block_table.shape)}")
    n = torch.clamp(pos + 1, max=window_size)                       # lanes filled
    k = torch.arange(window_size, dtype=torch.int64)[None, :]
    p = pos[:, None] - n[:, None] + 1 + k                            # oldest first
    filled = k < n[:, None]
    p = torch.where(filled, p, 0)
    batch = (torch.arange(pos.numel()) // seq_per_batch)[:, None].expand_as(p)
    blk = lookup(ori_block_table, batch, p // block)
    rows = torch.where(filled & (blk >= 0), blk * block + p % block, -1)
    if bool((rows > INT32_MAX).any()):
        t, j = (int(i) for i in torch.nonzero(rows > INT32_MAX)[0])
        raise ValueError(f"ori_block_table: expected blocks whose rows fit int32, got flat row "
                         f"{int(rows[t, j])} for token {t}, lane {j}")
    return rows.to(torch.int32)


def used_columns(position_ids: torch.Tensor, seq_per_batch: int, window_size: int,
                 block: int) -> list[list[int]]:
    """Per batch, the sorted logical columns its tokens' producer windows read (positions
    `max(0, pos - WIN + 1) .. pos`): a few per token, however far the positions are."""
    pos = _check_positions(position_ids, seq_per_batch)
    lo = torch.clamp(pos - window_size + 1, min=0) // block
    hi = pos // block
    B = pos.numel() // seq_per_batch
    # all tokens at once (an edge case has 2^16): each token's columns lo .. hi
    span = torch.arange(int((hi - lo).max()) + 1 if pos.numel() else 0, dtype=torch.int64)
    cols = lo[:, None] + span[None, :]
    cols = torch.where(cols <= hi[:, None], cols, lo[:, None]).reshape(B, -1)
    return [torch.unique(cols[b]).tolist() for b in range(B)]


def _dense_fits(B: int, cols: int, budget: int) -> bool:
    """Whether a dense `[B, cols]` table fits the work budget (far positions would need
    millions of columns; their tables are sparse)."""
    return B * cols * TABLE_ENTRY_COST <= budget


@st.composite
def ori_block_tables(draw, position_ids: torch.Tensor, seq_per_batch: int, window_size: int,
                     block: int, gen: torch.Generator, budget: int,
                     unmapped: tuple[int, ...] = ()) -> tuple[Table, int]:
    """`(ori_block_table, N_ori)`: one shared pool of `N_ori` blocks; every column a window
    reads gets its own block, in a random interleaving of all batches' pages with spare
    blocks between them. The other columns hold garbage (`-1`, int32 extremes, ids past the
    pool) or in-pool blocks that alias used ones; a sparse table leaves them out.
    unmapped: batches whose pages are all unmapped (`-1`), so the producer gives them
    empty windows."""
    B = position_ids.numel() // seq_per_batch
    used = used_columns(position_ids, seq_per_batch, window_size, block)
    for b in unmapped:
        used[b] = []
    n_used = sum(len(u) for u in used)
    spare = draw(st.sampled_from((0, 1, 3, n_used)), label="spare_ori_blocks")
    n_blocks = max(1, n_used + spare)
    ids = torch.randperm(n_blocks, generator=gen)[:n_used].tolist()
    cols = max((u[-1] + 1 for u in used if u), default=1)
    cols += draw(st.integers(0, 2), label="extra_ori_columns")
    if not _dense_fits(B, cols, budget):
        sparse: dict[int, dict[int, int]] = {}
        i = 0
        for b, u in enumerate(used):
            sparse[b] = dict(zip(u, ids[i:i + len(u)], strict=True))
            i += len(u)
        return sparse, n_blocks
    garbage = draw(st.booleans(), label="garbage_ori_table")
    if garbage:
        table = garbage_ids(gen, B * cols, n_blocks).reshape(B, cols)
    else:
        table = torch.randint(0, n_blocks, (B, cols), generator=gen)
    i = 0
    for b, u in enumerate(used):
        if u:
            table[b, u] = torch.tensor(ids[i:i + len(u)], dtype=torch.int64)
        i += len(u)
    for b in unmapped:
        table[b] = -1
    return table.to(torch.int32), n_blocks


#: What an adversarial window row may do to the producer's row, each a drawn count.
WINDOW_KINDS = ("negative", "duplicate", "foreign", "past_window", "empty")
#: Negative lanes: all ignored, whatever their value.
NEGATIVES = (-1, -2, INT32_MIN, -(2**16), -1)
#: How the lanes of an adversarial row are ordered.
WINDOW_ORDERS = ("producer", "shuffled", "reversed", "pads_front")
#: Adversarial window rows per call come from at most this many recipes (token t uses
#: recipe t mod n), so a call with many tokens costs Hypothesis a few draws.
MAX_RECIPES = 4


@st.composite
def window_recipes(draw, win: int) -> dict:
    """How one adversarial window row departs from the producer's: counts per
    `WINDOW_KINDS` entry (shrinking to 0, the producer's row) and a lane order."""
    recipe = {k: draw(st.integers(0, min(win, 6)), label=k) for k in WINDOW_KINDS[:-1]}
    recipe["empty"] = draw(st.integers(0, 7), label="empty") == 0
    recipe["order"] = draw(st.sampled_from(WINDOW_ORDERS), label="window_order")
    return recipe


def adversarial_window_row(recipe: dict, row: torch.Tensor, others: torch.Tensor,
                           n_rows: int, gen: torch.Generator) -> torch.Tensor:
    """One adversarial row from the producer's `row` `[WIN]`: lanes overwritten with
    negatives, duplicates of its live lanes, rows of other tokens (`others`, the call's
    producer rows, other batches included) and in-pool rows outside its window, then
    reordered. An "empty" recipe leaves only negative lanes."""
    win = row.numel()
    out = row.clone().to(torch.int64)
    if recipe["empty"]:
        neg = torch.tensor(NEGATIVES, dtype=torch.int64)
        return neg[torch.randint(0, len(NEGATIVES), (win,), generator=gen)].to(torch.int32)
    live = out[out >= 0]
    pool_rows = others.reshape(-1).to(torch.int64)
    pool_rows = pool_rows[pool_rows >= 0]
    mine = set(live.tolist())
    past = [r for r in torch.randint(0, n_rows, (4 * recipe["past_window"] + 4,),
                                     generator=gen).tolist() if r not in mine]
    values: list[int] = []
    values += [NEGATIVES[i % len(NEGATIVES)] for i in
               torch.randint(0, 1 << 10, (recipe["negative"],), generator=gen).tolist()]
    if live.numel():
        values += live[torch.randint(0, live.numel(), (recipe["duplicate"],), generator=gen)].tolist()
    if pool_rows.numel():
        values += pool_rows[torch.randint(0, pool_rows.numel(), (recipe["foreign"],),
                                          generator=gen)].tolist()
    values += past[:recipe["past_window"]]
    lanes = torch.randperm(win, generator=gen)[:len(values)]
    out[lanes] = torch.tensor(values[:lanes.numel()], dtype=torch.int64)
    order = recipe["order"]
    if order == "shuffled":
        out = out[torch.randperm(win, generator=gen)]
    elif order == "reversed":
        out = out.flip(0)
    elif order == "pads_front":
        out = torch.cat([out[out < 0], out[out >= 0]])
    return out.to(torch.int32)


@st.composite
def adversarial_windows(draw, producer_rows: torch.Tensor, n_rows: int,
                        gen: torch.Generator) -> torch.Tensor:
    """`window_swa_indices` departing from the producer's rows (`producer_rows` `[T, WIN]`):
    up to `MAX_RECIPES` drawn `window_recipes`, token `t` using recipe `t mod n`. Every
    non-negative lane stays inside the pool of `n_rows` flat rows."""
    T, win = producer_rows.shape
    n = draw(st.integers(1, min(MAX_RECIPES, T)), label="window_recipes")
    recipes = [draw(window_recipes(win), label=f"window_recipe[{i}]") for i in range(n)]
    out = torch.stack([adversarial_window_row(recipes[t % n], producer_rows[t], producer_rows,
                                              n_rows, gen) for t in range(T)])
    return out
