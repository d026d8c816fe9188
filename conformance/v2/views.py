"""v2 calls made from other v2 calls: everything but one token changed, lanes permuted,
physical blocks relabelled. Each keeps the live multiset of the tokens it promises to keep."""

from __future__ import annotations

import torch

from sparse_attn_conformance.conformance.v1.views import Aliasing, merged_block, offset_table
from sparse_attn_conformance.contracts import formats
from sparse_attn_conformance.contracts.v2 import Inputs, cmp_bound, live_lanes
from sparse_attn_conformance.strategies.pools import relabel_blocks


def others_changed(inputs: Inputs, t: int, gen: torch.Generator) -> Inputs:
    """`inputs` with everything token `t` does not read changed: every other token's query,
    position, window row and index row, and every pool row no live lane of `t` addresses.
    Other tokens' new lanes are drawn from rows and slots that stay valid (rows inside the
    pool, slots whose table entry is a real block) so the call stays within the contract."""
    T, block = inputs.T, inputs.BLOCK
    others = torch.arange(T) != t
    q = inputs.q.clone()
    q[others] = torch.flip(inputs.q, dims=[0])[others] * -1  # other tokens' queries
    live_w, live_c = live_lanes(inputs)
    # other tokens' positions: anything up to the largest position of the call
    top = int(inputs.position_ids.max()) + 1
    pos = inputs.position_ids.clone()
    pos[others, 0] = torch.randint(0, top, (T - 1,), generator=gen, dtype=torch.int32)
    # other tokens' window rows: any rows of the pool, or empty lanes
    n_rows = inputs.ori_kv.shape[0] * block
    win = torch.randint(-2, n_rows, inputs.window_swa_indices.shape, generator=gen,
                        dtype=torch.int32)
    win[t] = inputs.window_swa_indices[t]
    # other tokens' index rows: slots whose block is real in their batch's table, cut or not
    idx = inputs.idx_topk.clone()
    table = inputs.cmp_block_table.to(torch.int64)
    real = (table >= 0) & (table < inputs.cmp_kv.shape[0])
    n = inputs.index_topk
    if n:
        # all tokens at once (an edge case has 2^16): per token, n columns drawn among its
        # batch's real ones (listed first by a stable sort), a row in each
        b = inputs.batch_of_token
        count = real.sum(dim=1)[b][:, None]
        order = torch.argsort((~real).to(torch.int8), dim=1, stable=True)
        k = (torch.rand((T, n), generator=gen) * count).long().clamp(max=table.shape[1] - 1)
        slot = order[b[:, None], k] * block + torch.randint(block, (T, n), generator=gen)
        # every slot addresses a real block, so whichever the token's new cut keeps is
        # valid; some lanes empty
        empty = (torch.rand((T, n), generator=gen) < 0.25) | (count == 0)
        idx[others, :n] = torch.where(empty, -1, slot).to(torch.int32)[others]
    # pool rows token t does not read: fresh values of the same scale
    keep_ori = torch.zeros(n_rows, dtype=torch.bool)
    keep_ori[inputs.window_swa_indices[t].to(torch.int64)[live_w[t]]] = True
    c = inputs.idx_topk[t, :inputs.index_topk].to(torch.int64)[live_c[t]]
    keep_cmp = torch.zeros(inputs.cmp_kv.shape[0] * block, dtype=torch.bool)
    keep_cmp[table[t // inputs.S, c // block] * block + c % block] = True
    ori = _refill(inputs.ori_kv, keep_ori, gen)
    cmp = _refill(inputs.cmp_kv, keep_cmp, gen)
    return inputs.replace(q=q, position_ids=pos, window_swa_indices=win, idx_topk=idx,
                          ori_kv=ori, cmp_kv=cmp)


def _refill(pool: torch.Tensor, keep: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """`pool` with the rows outside `keep` (flat) replaced by a permutation of the pool's
    own rows, negated: new values of the same magnitudes (a byte pool's records, permuted:
    their codes and scales as drawn)."""
    name = formats.of_pool(pool)
    if name != formats.BF16:
        recs = formats.records(pool).reshape(-1, pool.shape[-1])
        perm = torch.randperm(recs.shape[0], generator=gen)
        out = torch.where(keep[:, None], recs, recs[perm])
        return formats.to_pool(name, out.reshape(pool.shape))
    flat = pool.reshape(-1, pool.shape[-1])
    perm = torch.randperm(flat.shape[0], generator=gen)
    out = torch.where(keep[:, None], flat, -flat[perm])
    return out.reshape(pool.shape).contiguous()


def lanes_permuted(inputs: Inputs, gen: torch.Generator) -> Inputs:
    """Each token's window lanes permuted, and its first `IDX_TOPK` compressed columns
    permuted among themselves (columns past `IDX_TOPK` are not lanes and stay)."""
    w = inputs.window_swa_indices
    w = torch.gather(w, -1, torch.argsort(torch.rand(w.shape, generator=gen), dim=-1))
    idx = inputs.idx_topk.clone()
    n = inputs.index_topk
    if n:
        head = idx[:, :n]
        idx[:, :n] = torch.gather(head, -1, torch.argsort(torch.rand(head.shape, generator=gen),
                                                          dim=-1))
    return inputs.replace(window_swa_indices=w.contiguous(), idx_topk=idx)


def blocks_relabelled(inputs: Inputs, gen: torch.Generator) -> Inputs:
    """Both pools' physical blocks moved to new labels, with the window rows and the
    compressed table rewritten to match: the same rows under new addresses."""
    block = inputs.BLOCK
    n_ori = inputs.ori_kv.shape[0]
    perm = torch.randperm(n_ori, generator=gen)
    ori = torch.empty_like(inputs.ori_kv)
    ori[perm] = inputs.ori_kv
    w = inputs.window_swa_indices.to(torch.int64)
    moved = perm[(w // block).clamp(0, n_ori - 1)] * block + w % block
    w = torch.where(w >= 0, moved, w).to(torch.int32)
    cmp, table = relabel_blocks(inputs.cmp_kv, inputs.cmp_block_table,
                                torch.randperm(inputs.cmp_kv.shape[0], generator=gen))
    return inputs.replace(ori_kv=ori, window_swa_indices=w, cmp_kv=cmp, cmp_block_table=table)


# -- aliasing: two live lanes that resolve to one physical row (contract sections 8, 9) ------

def _cmp_used_rows(inputs: Inputs, live_c: torch.Tensor, b: int) -> dict[int, set[int]]:
    """Batch `b`'s compressed table usage: `column -> rows` read by a live compressed lane
    (`live_c`, the call's) of any of its tokens."""
    toks = inputs.batch_of_token == b
    c = inputs.idx_topk[:, :inputs.index_topk].to(torch.int64)[toks][live_c[toks]]
    used: dict[int, set[int]] = {}
    block = inputs.BLOCK
    for col, r in torch.unique(torch.stack([c // block, c % block], 1), dim=0).tolist():
        used.setdefault(col, set()).add(r)
    return used


def _pick(items: list, gen: torch.Generator):
    return items[int(torch.randint(len(items), (1,), generator=gen))]


def _other_lane(n: int, live: torch.Tensor, skip: int | None, gen: torch.Generator) -> int | None:
    """A lane among `n` other than `skip`: an ignored one when there is one."""
    others = [k for k in range(n) if k != skip]
    if not others:
        return None
    ignored = [k for k in others if not bool(live[k])]
    return _pick(ignored or others, gen)


def table_aliased(inputs: Inputs, gen: torch.Generator, tries: int = 8) -> Aliasing | None:
    """Two live compressed lanes of one token, with different slot ids in different
    `cmp_block_table` columns, that resolve to one physical row (section 8: several columns
    may name one block; section 9: each live lane counts).

    A token's live compressed lane (slot `c`, row `r` of column `col`) is repeated over
    another of its first `IDX_TOPK` columns (an ignored one when there is one), and the rows
    that live lanes of the batch read through both `col` and another column `col2` get
    `col`'s values in `col2` (a new block, named by `col2`): `base`. In `aliased` the repeat
    is slot `c2`, row `r` of `col2` (live for the token), and both columns name one new
    block: `col`'s, with the other rows read through `col2` copied in. Window lanes need no
    view of their own: two window lanes naming one flat row are a repeated entry, which the
    strategies draw. None when no token allows it (within `tries` tokens and `tries` lanes
    of each)."""
    block = inputs.BLOCK
    _, live_c = live_lanes(inputs)
    bound = cmp_bound(inputs.position_ids, inputs.compress_ratio)
    M = inputs.cmp_block_table.shape[1]
    tokens = torch.nonzero(live_c.any(dim=-1)).flatten().tolist()
    for i in torch.randperm(len(tokens), generator=gen).tolist()[:tries]:
        t = tokens[i]
        b, cut = t // inputs.S, int(bound[t])
        if inputs.index_topk < 2:
            continue
        lanes = torch.nonzero(live_c[t]).flatten()
        for j1 in lanes[torch.randperm(len(lanes), generator=gen)][:tries].tolist():
            c = int(inputs.idx_topk[t, j1])
            col, r = c // block, c % block
            cols = [k for k in range(min(M, -(-min(cut, M * block) // block)))
                    if k != col and k * block + r < cut]
            if cols:
                break
        else:
            continue
        j2 = _other_lane(inputs.index_topk, live_c[t], j1, gen)
        col2 = _pick(cols, gen)
        c2 = col2 * block + r
        used = _cmp_used_rows(inputs, live_c, b)
        rows1, rows2 = used[col], used.get(col2, set())
        table = inputs.cmp_block_table.clone()
        blk, blk2 = int(table[b, col]), int(table[b, col2])
        # base: the repeat, and col2's rows that col also reads holding col's values
        cmp = torch.cat([inputs.cmp_kv, merged_block(inputs.cmp_kv, blk2, inputs.cmp_kv, blk,
                                                     sorted(rows1 & rows2))])
        base_table = table.clone()
        base_table[b, col2] = cmp.shape[0] - 1
        idx = inputs.idx_topk.clone()
        idx[t, j2] = c
        base = inputs.replace(idx_topk=idx, cmp_kv=cmp, cmp_block_table=base_table)
        # aliased: both columns name one block, and the repeat is c2
        cmp = torch.cat([inputs.cmp_kv, merged_block(inputs.cmp_kv, blk, inputs.cmp_kv, blk2,
                                                     sorted(rows2 - rows1))])
        table[b, col] = table[b, col2] = cmp.shape[0] - 1
        idx = idx.clone()
        idx[t, j2] = c2
        alias = inputs.replace(idx_topk=idx, cmp_kv=cmp, cmp_block_table=table)
        return Aliasing(base, alias, (t,), (j1, j2), (c, c2), False,
                        ("compressed", "compressed"))
    return None


def one_storage(inputs: Inputs, gen: torch.Generator, keep_windows: bool = False,
                tries: int = 8) -> Aliasing | None:
    """`ori_kv` and `cmp_kv` as one storage, as single-pool kernels keep them: one pool
    (the window blocks, then the compressed ones), passed as one tensor object
    (`Aliasing.kwargs`), window rows unchanged and the compressed table moved up by `N_ori`;
    and a compressed lane of one token that resolves to the same physical row as a live
    window lane of it.

    Either a live compressed lane (row `r` of block `n` in the table) is repeated as a
    window lane of the token (an ignored one when there is one): in `base` the lane names
    row `r` of a copy of block `n` appended to `ori_kv`; in `aliased` the flat row of block
    `n` itself in the one pool. Or (with `keep_windows`, which leaves every window row as
    drawn, or when the token has no live compressed lane) a live window lane (row `r` of
    ori block `n`) is repeated as a compressed lane, slot `c2` at row `r` of a column
    `col2` live for the token: in `base` `col2` names a copy of block `n` appended to
    `cmp_kv` (what other lanes of the batch read through `col2` now holds block `n`'s
    rows); in `aliased` block `n` of the one pool. None when no token allows it."""
    block, n_ori = inputs.BLOCK, inputs.ori_kv.shape[0]
    live_w, live_c = live_lanes(inputs)
    bound = cmp_bound(inputs.position_ids, inputs.compress_ratio)
    M = inputs.cmp_block_table.shape[1]
    pool = torch.cat([inputs.ori_kv, inputs.cmp_kv])
    moved = offset_table(inputs.cmp_block_table, inputs.cmp_kv.shape[0], n_ori)
    tokens = torch.nonzero(live_w.any(dim=-1) | live_c.any(dim=-1)).flatten().tolist()
    for i in torch.randperm(len(tokens), generator=gen).tolist()[:tries]:
        t = tokens[i]
        b, cut = t // inputs.S, int(bound[t])
        if not keep_windows and bool(live_c[t].any()):
            j1 = _pick(torch.nonzero(live_c[t]).flatten().tolist(), gen)
            k = _other_lane(inputs.WIN, live_w[t], None, gen)
            c = int(inputs.idx_topk[t, j1])
            n, r = int(inputs.cmp_block_table[b, c // block]), c % block
            win = inputs.window_swa_indices.clone()
            win[t, k] = n_ori * block + r
            base = inputs.replace(window_swa_indices=win,
                                  ori_kv=torch.cat([inputs.ori_kv, inputs.cmp_kv[n:n + 1]]))
            win = win.clone()
            win[t, k] = (n_ori + n) * block + r
            alias = inputs.replace(window_swa_indices=win, ori_kv=pool, cmp_kv=pool,
                                   cmp_block_table=moved)
            return Aliasing(base, alias, (t,), (j1, k), (c, int(win[t, k])), True,
                            ("compressed", "window"))
        j2 = _other_lane(inputs.index_topk, live_c[t], None, gen)
        if j2 is None or not bool(live_w[t].any()):
            continue
        lanes = torch.nonzero(live_w[t]).flatten()
        for k1 in lanes[torch.randperm(len(lanes), generator=gen)][:tries].tolist():
            w = int(inputs.window_swa_indices[t, k1])
            n, r = w // block, w % block
            cols = [col for col in range(min(M, -(-min(cut, M * block) // block)))
                    if col * block + r < cut]
            if cols:
                break
        else:
            continue
        col2 = _pick(cols, gen)
        c2 = col2 * block + r
        idx = inputs.idx_topk.clone()
        idx[t, j2] = c2
        table = inputs.cmp_block_table.clone()
        table[b, col2] = inputs.cmp_kv.shape[0]
        base = inputs.replace(idx_topk=idx, cmp_block_table=table,
                              cmp_kv=torch.cat([inputs.cmp_kv, inputs.ori_kv[n:n + 1]]))
        table = moved.clone()
        table[b, col2] = n
        alias = inputs.replace(idx_topk=idx, ori_kv=pool, cmp_kv=pool, cmp_block_table=table)
        return Aliasing(base, alias, (t,), (k1, j2), (w, c2), True,
                        ("window", "compressed"))
    return None
