"""Whole kernel calls: a configuration, lengths, index rows, tables, pools and values,
composed. Hypothesis draws the structure (sizes, regimes, recipes, the lengths of the first
batches) so that failures shrink; a generator seeded from a drawn seed fills the bulk."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from sparse_attn_conformance.contracts.v1 import (
    Inputs,
    Preconditions,
    derived_lengths,
    gather_rows,
    live_mask,
)
from sparse_attn_conformance.strategies import edges
from sparse_attn_conformance.strategies.config import DEFAULT_BUDGET, Config, configs
from sparse_attn_conformance.strategies.layouts import layouts
from sparse_attn_conformance.strategies.lengths import (
    model_seqused,
    n_compressed,
    out_of_model_seqused,
    start_positions,
)
from sparse_attn_conformance.strategies.pools import block_table
from sparse_attn_conformance.strategies.v1.rows import (
    adversarial_row,
    canonical_row,
    empty_row,
    row_recipes,
)
from sparse_attn_conformance.strategies.values import (
    FINITE_SINK_REGIMES,
    SINK_REGIMES,
    dominant_positions,
    exact_pool,
    fill_pool,
    make_dominant,
    queries,
    sinks,
    value_regimes,
)

#: Adversarial rows per case are built from at most this many recipes (token t uses
#: recipe t mod n), so a call with thousands of tokens costs Hypothesis a few draws.
MAX_RECIPES = 4
#: Above this many tokens a batch's tokens share one row (built once, against its last
#: token): building a row per token costs tens of microseconds each.
SHARED_ROWS_ABOVE = 4096


@dataclass(frozen=True)
class Case:
    """One generated call and how it was made.

    path: "SWA", "HCA" or "CSA" for model-written rows; "adversarial" otherwise.
    start_pos: per-batch start positions when the lengths follow the model, else None.
    values: the value regime (strategies/values.py).
    extremes: values beyond fp16's range or logits beyond an unshifted exp's.
    dominant: some token has one key carrying most of its softmax weight.
    edge: the edge mode (`strategies.edges.EDGE_MODES`) of an edge case, else None.
    kv_format: the pools' cache format (contracts/formats.py); fp8_regime: how its bytes
        were drawn (strategies/formats.py), None for bf16.
    """

    inputs: Inputs
    config: Config
    path: str
    start_pos: tuple[int, ...] | None
    seed: int
    values: str = "tame"
    extremes: bool = False
    dominant: bool = False
    edge: str | None = None
    kv_format: str = "bf16"
    fp8_regime: str | None = None

    def _repr_pretty_(self, p, cycle) -> None:  # Hypothesis prints draws with this
        p.text(repr(self))

    def __repr__(self) -> str:
        fmt = f", kv_format={self.kv_format}" if self.kv_format != "bf16" else ""
        return (f"Case({self.inputs!r}, path={self.path}, values={self.values}, "
                f"seed={self.seed}{fmt})")

    def size(self) -> dict:
        """The size of this case, as reported for a shrunk counterexample."""
        live = live_mask(self.inputs.topk_idxs, self.inputs.seqused_kv, self.config.WIN)
        return {"B": self.config.B, "S": self.config.S, "tokens": self.config.B * self.config.S,
                "live_entries": int(live.sum())}

    def describe(self, max_tokens: int = 16) -> str:
        """A compact, readable dump for failure messages."""
        c, i = self.config, self.inputs
        _, wv, cv = derived_lengths(i.seqused_kv, c.S, c.WIN)
        sink = i.attn_sink.tolist()
        lines = [
            f"config: B={c.B} S={c.S} H={c.H} D={c.D} WIN={c.WIN} IDX_TOPK={c.IDX_TOPK} "
            f"BLOCK={c.BLOCK} ratio={c.ratio} softmax_scale={c.softmax_scale:.6g}",
            f"path={self.path} values={self.values} start_pos={_short(self.start_pos)} "
            f"seed={self.seed} kv_format={self.kv_format}"
            + (f" fp8_regime={self.fp8_regime}" if self.fp8_regime else ""),
            f"layout={dict(i.layout) or 'all contiguous'}",
            f"seqused_kv={_short(i.seqused_kv.tolist())} attn_sink={_short(sink)}",
            f"window_valid[b][s]={_short(wv.tolist())} cmp_valid[b][s]={_short(cv.tolist())}",
        ]
        shown = 0
        for b in range(c.B):
            for s in range(c.S):
                if shown == max_tokens:
                    lines.append(f"... {c.B * c.S - shown} more tokens")
                    return "\n".join(lines)
                lines.append(f"topk_idxs[{b},{s}]={_short(i.topk_idxs[b, s].tolist(), 24)}")
                shown += 1
        return "\n".join(lines)


def _short(xs, n: int = 16):
    if xs is None or len(xs) <= n:
        return xs
    return f"{xs[:n]} ... ({len(xs)} in all)"


def _columns(slots: torch.Tensor, live: torch.Tensor, block: int) -> list[set[int]]:
    """Per batch, the logical block columns that live entries address (`slots` `[B, S, T]`)."""
    return [set((slots[b][live[b]] // block).tolist()) for b in range(slots.shape[0])]


def _rows(draw, cfg: Config, adversarial: bool, path: str, n_cmp_per_batch, seqused,
          window_valid, cmp_valid, gen, min_live: int = 0) -> torch.Tensor:
    rows = torch.full((cfg.B, cfg.S, cfg.TOPK), -1, dtype=torch.int32)
    if not adversarial:
        for b in range(cfg.B):
            n_cmp = n_cmp_per_batch[b]
            order = torch.randperm(n_cmp, generator=gen) if path == "CSA" else None
            rows[b, :] = torch.tensor(canonical_row(cfg, seqused[b], n_cmp, order))
        return rows
    n = draw(st.integers(1, min(MAX_RECIPES, cfg.B * cfg.S)), label="recipes")
    recipes = [draw(row_recipes(cfg.TOPK, min_live), label=f"recipe[{i}]") for i in range(n)]
    # a shared row is built against the last token's lengths, so its entries are live for
    # the last token and partly dead for the earlier ones
    shared = cfg.B * cfg.S > SHARED_ROWS_ABOVE or draw(st.booleans(), label="shared_rows")
    for b in range(cfg.B):
        for s in range(1 if shared else cfg.S):
            ref = cfg.S - 1 if shared else s
            recipe = recipes[(b * cfg.S + s) % n]
            rows[b, s] = torch.tensor(adversarial_row(
                recipe, cfg, int(window_valid[b, ref]), int(cmp_valid[b, ref]), gen))
        if shared:
            rows[b, 1:] = rows[b, 0]
    return rows


@st.composite
def cases(draw, pre: Preconditions = Preconditions(), adversarial: bool | None = None,
          config: Config | None = None, budget: int = DEFAULT_BUDGET, min_S: int = 1,
          ring: str | None = None, empty_token: bool = False,
          fixed: dict | None = None, edge: str | None = "drawn") -> Case:
    """A valid kernel call meeting `pre`, within the work `budget`.

    adversarial: True for adversarial rows and out-of-model lengths, False for model
        rows only, None to draw either (kernels with `canonical_rows` always get model rows).
    min_S: at least this many tokens per batch.
    ring: "unwrapped" (no batch's window ring has wrapped), "wrapped" (batch 0's has), or
        None; either makes the lengths follow the model from start positions.
    empty_token: at least one token has no live entry.
    fixed: dims taken as given (e.g. the model's attention shape).
    edge: "drawn" (an edge case in one draw in three, where allowed), None (never), or one
        of `edges.EDGE_MODES` (that mode, where `pre` allows it: tests that must reach it).
    """
    # integers at the edge of their types and counts past launch limits (strategies/edges.py),
    # within the declared dims, in the modes the preconditions leave in (`edges.excluded`)
    if edge is not None and edge != "drawn" and edge not in edges.EDGE_MODES:
        raise ValueError(f"cases: edge expected 'drawn', None or one of {edges.EDGE_MODES}, "
                         f"got {edge!r}")
    modes = ()
    if config is None and fixed is None and ring is None and adversarial is not False:
        modes = edges.allowed_modes(pre, min_S)
    if edge == "drawn":
        edge = draw(edges.edge_modes(allowed=modes), label="edge") if modes else None
    elif edge not in modes:
        edge = None
    if edge is not None:
        cfg = draw(edges.edge_configs(edge, min_S, pre), label="edge_config")
        adversarial = True
    else:
        cfg = config if config is not None else draw(configs(
            pre, budget, min_S=min_S, win_at_least_S=ring == "unwrapped", fixed=fixed))
    if pre.canonical_rows:
        adversarial = False
    if adversarial is None:
        adversarial = draw(st.booleans(), label="adversarial")
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    gen = torch.Generator().manual_seed(seed)

    start_pos = None
    if adversarial:
        path = "adversarial"
        if edge is not None:
            seqused = list(draw(edges.edge_seqused(cfg, edge, pre.max_seqused),
                                label="edge_seqused"))
        elif ring is not None or draw(st.booleans(), label="model_lengths"):
            start_pos = draw(start_positions(cfg, gen, ring, pre.max_seqused))
            seqused = [model_seqused(cfg, p) for p in start_pos]
        else:
            seqused = list(draw(out_of_model_seqused(cfg, gen, max_seqused=pre.max_seqused,
                                                       budget=budget)))
    else:
        start_pos = draw(start_positions(cfg, gen, ring, pre.max_seqused))
        seqused = [model_seqused(cfg, p) for p in start_pos]
        path = "SWA" if cfg.ratio == 0 else (
            "HCA" if pre.canonical_rows else draw(st.sampled_from(("HCA", "CSA")), label="path"))
    n_cmp = [n_compressed(cfg, p) for p in start_pos] if start_pos is not None else None
    if empty_token and not adversarial:
        # a batch whose cache is shorter than the call: its first tokens see nothing, and
        # its row (the model's, for that length) has no compressed entry
        # at most WIN: the model's row for a cache that short has no compressed entry (with
        # WIN < S - 1 a longer one would derive live compressed slots the row does not hold)
        seqused[0] = draw(st.integers(0, min(cfg.S - 1, cfg.WIN)), label="short_seqused")
        n_cmp[0] = 0
        start_pos = None  # the lengths no longer follow the model's positions
    seqused_t = torch.tensor(seqused, dtype=torch.int32)
    _, window_valid, cmp_valid = derived_lengths(seqused_t, cfg.S, cfg.WIN)

    rows = _rows(draw, cfg, adversarial, path, n_cmp, seqused, window_valid, cmp_valid, gen,
                 min_live=0 if edge is None else 1)
    if empty_token and adversarial:
        b, s = (int(torch.randint(n, (1,), generator=gen)) for n in (cfg.B, cfg.S))
        rows[b, s] = empty_row(rows[b, s], int(window_valid[b, s]), int(cmp_valid[b, s]), cfg.WIN)
    live = live_mask(rows, seqused_t, cfg.WIN)

    # tables: the columns live slots may use address inside the pools; the rest may not.
    # Only adversarial cases share blocks between unaddressed columns (position causality
    # poisons model cases by logical slot, which needs a block per slot)
    e = rows.to(torch.int64)
    block = cfg.BLOCK
    wv_cols = (-(-window_valid[:, -1] // block)).tolist()
    cv_cols = (-(-cmp_valid[:, -1] // block)).tolist()
    garbage = draw(st.booleans(), label="garbage_tables")
    extra = draw(st.integers(0, 2), label="extra_cmp_columns")
    ori_table, n_ori = block_table(
        gen, wv_cols, -(-cfg.WIN // block), draw(st.integers(0, 2), label="spare_ori_blocks"),
        _columns(e, live & (e < cfg.WIN), block) if adversarial else None, garbage)
    # an edge case's compressed pool of more than 2^16 blocks (one row each): block ids past
    # 2^16 for its live slots
    spare = edges.spare_blocks(cfg) if edge == "table" else st.integers(0, 2)
    cmp_table, n_cmp = block_table(
        gen, cv_cols, max(1, max(cv_cols)) + extra, draw(spare, label="spare_cmp_blocks"),
        _columns(e - cfg.WIN, live & (e >= cfg.WIN), block) if adversarial else None, garbage)

    spec = draw(value_regimes(cfg.D, cfg.TOPK, cfg.softmax_scale, keep_scale=config is not None),
                label="values")
    if spec["regime"] == "extreme":
        cfg = dataclasses.replace(cfg, softmax_scale=spec["scale"])
        ori_kv = exact_pool(gen, n_ori, block, cfg.D, spec["k_exp"])
        cmp_kv = exact_pool(gen, n_cmp, block, cfg.D, spec["k_exp"])
        kv_scale = 2.0 ** spec["k_exp"]
    else:
        kv_scale = spec["kv_scale"]
        ori_kv = fill_pool(gen, n_ori, block, cfg.D, kv_scale, spec["dist"])
        cmp_kv = fill_pool(gen, n_cmp, block, cfg.D, kv_scale, spec["dist"])
    q = queries(gen, (cfg.B, cfg.S, cfg.H, cfg.D), spec, cfg.softmax_scale, cfg.D, kv_scale)

    allowed_sinks = FINITE_SINK_REGIMES if pre.finite_sinks or not adversarial else SINK_REGIMES
    sink = sinks(gen, cfg.H, draw(st.sampled_from(allowed_sinks), label="sink_regime"))

    inputs = Inputs(q=q, ori_kv=ori_kv, ori_block_table=ori_table, cmp_kv=cmp_kv,
                    cmp_block_table=cmp_table, topk_idxs=rows, attn_sink=sink,
                    seqused_kv=seqused_t, softmax_scale=cfg.softmax_scale, window_size=cfg.WIN)
    dominant = False
    # `_dominate` places keys token by token: too slow for an edge case's 2^16 tokens
    if (spec["regime"] == "dominant" and cfg.softmax_scale != 0 and bool(live.any())
            and cfg.B * cfg.S <= SHARED_ROWS_ABOVE):
        inputs = _dominate(inputs, live, gen)
        dominant = True
    extremes = spec["regime"] == "extreme" and _beyond_fp16(inputs)
    inputs = inputs.replace(layout=draw(layouts(inputs), label="layout"))
    return Case(inputs=inputs, config=cfg, path=path, start_pos=start_pos, seed=seed,
                values=spec["regime"], extremes=extremes, dominant=dominant, edge=edge)


def _dominate(inputs: Inputs, live: torch.Tensor, gen: torch.Generator) -> Inputs:
    """Per token, boost the row at a drawn live position to 4x the pools' largest entry
    (random signs) and align the token's query with it, so that it out-scores every other
    live key by 4 to 40 logits."""
    where = dominant_positions(gen, live, inputs.topk_idxs)
    ori, cmp = inputs.ori_kv.clone(), inputs.cmp_kv.clone()
    big = 4 * max(float(ori.float().abs().max()), float(cmp.float().abs().max()), 1.0)
    win, block = inputs.window_size, inputs.BLOCK
    for b, s in torch.nonzero(where >= 0).tolist():
        e = int(inputs.topk_idxs[b, s, int(where[b, s])])
        pool, table, slot = (ori, inputs.ori_block_table, e) if e < win else (
            cmp, inputs.cmp_block_table, e - win)
        sign = torch.randint(0, 2, (inputs.D,), generator=gen).float() * 2 - 1
        pool[int(table[b, slot // block]), slot % block] = (sign * big).to(pool.dtype)
    boosted = inputs.replace(ori_kv=ori, cmp_kv=cmp)
    key_rows, _ = gather_rows(boosted)
    gaps = 4 + 36 * torch.rand(where.shape, generator=gen)
    q = make_dominant(boosted.q, key_rows, live, where, inputs.softmax_scale, gaps)
    return boosted.replace(q=q)


def _beyond_fp16(i: Inputs) -> bool:
    """Values past fp16's range, or logits an unshifted exp overflows on (a bound)."""
    kv = max(float(i.ori_kv.float().abs().max()), float(i.cmp_kv.float().abs().max()))
    qmax = float(i.q.float().abs().max())
    return kv > 65504 or qmax * kv * i.D * abs(i.softmax_scale) > 88
