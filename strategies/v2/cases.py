"""Whole v2 kernel calls: a configuration, positions, an ori block table over one shared
pool, window rows, compressed top-k rows, the compressed block table, pools and values,
composed. Hypothesis draws the structure (sizes, regimes, recipes, the first batches'
positions) so that failures shrink; a generator seeded from a drawn seed fills the bulk.
The value regimes, sinks, dominant keys and layouts are v1's (strategies/values.py,
strategies/layouts.py)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from sparse_attn_conformance.contracts.v2 import (
    Inputs,
    Preconditions,
    cmp_bound,
    gather_rows,
    live_lanes,
)
from sparse_attn_conformance.strategies.config import DEFAULT_BUDGET
from sparse_attn_conformance.strategies.layouts import layouts
from sparse_attn_conformance.strategies.v1.cases import _beyond_fp16, _short
from sparse_attn_conformance.strategies.v2 import edges
from sparse_attn_conformance.strategies.v2.config import Config, configs
from sparse_attn_conformance.strategies.v2.indexer import (
    PAD,
    adversarial_idx_topk,
    cmp_block_tables,
    live_slots,
    model_idx_topk,
)
from sparse_attn_conformance.strategies.v2.positions import (
    TOKEN_PLACEMENTS,
    adversarial_positions,
    model_positions,
    start_positions,
)
from sparse_attn_conformance.strategies.v2.windows import (
    NEGATIVES,
    Table,
    adversarial_windows,
    ori_block_tables,
    window_rows,
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

#: The model's paths: CSA (indexer top-k in score order), HCA (the first slots in order),
#: SWA (window only).
MODEL_PATHS = ("CSA", "HCA", "SWA")


@dataclass(frozen=True)
class Case:
    """One generated v2 call and how it was made.

    path: "CSA", "HCA" or "SWA" for model-written inputs; "adversarial" otherwise.
    start_pos: per-batch start positions when the positions follow the model, else None.
    values: the value regime (strategies/values.py).
    extremes: values beyond fp16's range or logits beyond an unshifted exp's.
    dominant: some token has one key carrying most of its softmax weight.
    ori_block_table: the table the window rows were produced through (dense `[B, cols]`
        int32, or sparse `{b: {column: block}}`); not a kernel argument.
    placement: how the tokens of a batch are placed (`positions.TOKEN_PLACEMENTS`).
    edge: the edge mode (`strategies.v2.edges.EDGE_MODES`) of an edge case, else None.
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
    ori_block_table: Table | None = dataclasses.field(default=None, repr=False, compare=False)
    placement: str = "model"
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
        lw, lc = live_lanes(self.inputs)
        return {"B": self.config.B, "S": self.config.S, "tokens": self.config.T,
                "live_entries": int(lw.sum()) + int(lc.sum())}

    def describe(self, max_tokens: int = 16) -> str:
        """A compact, readable dump for failure messages: config, positions, cuts, and per
        token its window row and compressed row."""
        c, i = self.config, self.inputs
        pos = i.position_ids.reshape(-1).tolist()
        bound = cmp_bound(i.position_ids, i.compress_ratio)
        lines = [
            f"config: B={c.B} S={c.S} H={c.H} D={c.D} WIN={c.WIN} IDX_TOPK={c.IDX_TOPK} L={c.L} "
            f"BLOCK={c.BLOCK} compress_ratio={c.ratio} cut={c.cut} "
            f"softmax_scale={c.softmax_scale:.6g}",
            f"path={self.path} placement={self.placement} edge={self.edge} values={self.values} "
            f"start_pos={_short(self.start_pos)} seed={self.seed} kv_format={self.kv_format}"
            + (f" fp8_regime={self.fp8_regime}" if self.fp8_regime else ""),
            f"layout={dict(i.layout) or 'all contiguous'} N_ori={i.ori_kv.shape[0]} "
            f"N_cmp={i.cmp_kv.shape[0]} M={i.cmp_block_table.shape[1]}",
            f"position_ids={_short(pos)} attn_sink={_short(i.attn_sink.tolist())}",
            f"cmp_bound={'none (no cut)' if i.compress_ratio is None else _short(bound.tolist())}",
        ]
        for t in range(c.T):
            if t == max_tokens:
                lines.append(f"... {c.T - t} more tokens")
                break
            window = _short(i.window_swa_indices[t].tolist(), 24)
            lines.append(f"t={t} b={t // c.S} pos={pos[t]} window={window} "
                         f"idx_topk={_short(i.idx_topk[t].tolist(), 24)}")
        return "\n".join(lines)


def _pool(gen, spec: dict, n: int, cfg: Config) -> torch.Tensor:
    if spec["regime"] == "extreme":
        return exact_pool(gen, n, cfg.BLOCK, cfg.D, spec["k_exp"])
    return fill_pool(gen, n, cfg.BLOCK, cfg.D, spec["kv_scale"], spec["dist"])


@st.composite
def cases(draw, pre: Preconditions = Preconditions(), adversarial: bool | None = None,
          config: Config | None = None, budget: int = DEFAULT_BUDGET, min_S: int = 1,
          empty_token: bool = False, fixed: dict | None = None, edge: str | None = "drawn") -> Case:
    """A valid v2 kernel call meeting `pre`, within the work `budget`.

    adversarial: True for adversarial positions, window rows and compressed rows, False
        for model-written inputs only, None to draw either. `pre.canonical_windows` keeps
        the producer's windows and `pre.canonical_rows` the model's compressed rows even in
        an adversarial case (both: never adversarial).
    config: a v2 `Config` to use as given (another case's, for independence properties).
    min_S: at least this many tokens per batch.
    empty_token: at least one token has no live lane at all.
    fixed: dims taken as given (e.g. the model's attention shape).
    edge: "drawn" (an edge case in one draw in three, where allowed), None (never), or one
        of `edges.EDGE_MODES` (that mode, where allowed: tests that must reach each mode).
    """
    # integers at the edge of their types and counts past launch limits
    # (strategies/v2/edges.py), drawn only where the whole contract is asked for
    if edge is not None and edge != "drawn" and edge not in edges.EDGE_MODES:
        raise ValueError(f"cases: edge expected 'drawn', None or one of {edges.EDGE_MODES}, "
                         f"got {edge!r}")
    # within the declared dims, in the modes the preconditions leave in (`edges.excluded`)
    modes = ()
    if config is None and fixed is None and not empty_token and adversarial is not False:
        modes = edges.allowed_modes(pre, min_S)
    if edge == "drawn":
        edge = draw(edges.edge_modes(modes), label="edge") if modes else None
    elif edge not in modes:
        edge = None
    if edge is not None:
        cfg = draw(edges.edge_configs(edge, min_S, pre), label="edge_config")
        seed = draw(st.integers(0, 2**32 - 1), label="seed")
        gen = torch.Generator().manual_seed(seed)
        start_pos, position_ids, ori_table, n_ori, windows, idx, cmp_table, n_cmp = draw(
            edges.edge_lanes(cfg, edge, gen, budget), label="edge_lanes")
        return _finish(draw, cfg, gen, seed, pre, True, config, "adversarial", start_pos,
                       "model", position_ids, ori_table, n_ori, windows, idx, cmp_table, n_cmp,
                       edge)
    cfg = config if config is not None else draw(configs(pre, budget, min_S=min_S, fixed=fixed),
                                                 label="config")
    if pre.canonical_rows and pre.canonical_windows:
        adversarial = False
    if adversarial is None:
        adversarial = draw(st.booleans(), label="adversarial")
    adv_windows = adversarial and not pre.canonical_windows
    adv_rows = adversarial and not pre.canonical_rows
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    gen = torch.Generator().manual_seed(seed)
    far = pre.max_position is None or pre.max_position > 2**17

    # positions: a batch at unrelated positions needs pages per token, not per batch
    if adversarial:
        per_token = cfg.T * (cfg.WIN + 2 * cfg.BLOCK) * cfg.D <= budget
        placements = TOKEN_PLACEMENTS if per_token else ("model", "equal", "shuffled")
        position_ids, placement = draw(adversarial_positions(
            cfg, gen, pre.max_position, far, placements), label="positions")
        start_pos = None
        pos2 = position_ids.reshape(cfg.B, cfg.S).to(torch.int64)
        if placement == "model":
            start_pos = tuple(pos2[:, 0].tolist())
        kv_len = (pos2.max(dim=1).values + 1).tolist()
        path = "adversarial"
    else:
        start_pos = draw(start_positions(cfg, gen, pre.max_position, far), label="start_pos")
        position_ids = model_positions(start_pos, cfg.S)
        kv_len = [p + cfg.S for p in start_pos]
        placement = "model"
        path = draw(st.sampled_from(MODEL_PATHS), label="path")

    # the empty token: a batch whose pages are unmapped and whose indexer sees nothing
    # where the producer's rows are required, else one token's lanes all made dead
    empty_t = int(torch.randint(cfg.T, (1,), generator=gen)) if empty_token else None
    empty_b = () if empty_t is None else (empty_t // cfg.S,)
    ori_table, n_ori = draw(ori_block_tables(
        position_ids, cfg.S, cfg.WIN, cfg.BLOCK, gen, budget,
        unmapped=empty_b if empty_token and not adv_windows else ()), label="ori_table")
    windows = window_rows(position_ids, ori_table, cfg.S, cfg.WIN, cfg.BLOCK)
    if adv_windows:
        windows = draw(adversarial_windows(windows, n_ori * cfg.BLOCK, gen), label="windows")
        if empty_t is not None:
            neg = torch.tensor(NEGATIVES, dtype=torch.int32)
            windows[empty_t] = neg[torch.randint(0, len(NEGATIVES), (cfg.WIN,), generator=gen)]

    if adv_rows:
        idx = draw(adversarial_idx_topk(cfg, position_ids, gen, budget, pre.max_position,
                                        pre.max_cmp_columns), label="idx_topk")
        if empty_t is not None:
            live = live_slots(idx, position_ids, cfg)[empty_t]
            idx[empty_t, :cfg.IDX_TOPK] = torch.where(live, PAD, idx[empty_t, :cfg.IDX_TOPK])
    else:
        model_path = path if path in MODEL_PATHS else draw(st.sampled_from(MODEL_PATHS),
                                                            label="rows_path")
        idx = model_idx_topk(position_ids, kv_len, cfg, model_path, gen, budget,
                             empty=empty_b if empty_token else (),
                             max_columns=pre.max_cmp_columns)
    cmp_table, n_cmp = draw(cmp_block_tables(idx, position_ids, cfg, gen, pre.max_cmp_columns),
                            label="cmp_table")
    return _finish(draw, cfg, gen, seed, pre, adversarial, config, path, start_pos, placement,
                   position_ids, ori_table, n_ori, windows, idx, cmp_table, n_cmp, None)


def _finish(draw, cfg: Config, gen, seed: int, pre: Preconditions, adversarial: bool, config,
            path: str, start_pos, placement: str, position_ids, ori_table, n_ori: int, windows,
            idx, cmp_table, n_cmp: int, edge: str | None) -> Case:
    """The case's values (pools, queries, sinks, a dominant key, a layout) over its lanes."""
    spec = draw(value_regimes(cfg.D, cfg.TOPK, cfg.softmax_scale, keep_scale=config is not None),
                label="values")
    if spec["regime"] == "extreme":
        cfg = dataclasses.replace(cfg, softmax_scale=spec["scale"])
        kv_scale = 2.0 ** spec["k_exp"]
    else:
        kv_scale = spec["kv_scale"]
    ori_kv, cmp_kv = _pool(gen, spec, n_ori, cfg), _pool(gen, spec, n_cmp, cfg)
    q = queries(gen, (cfg.T, cfg.H, cfg.D), spec, cfg.softmax_scale, cfg.D, kv_scale)
    allowed_sinks = FINITE_SINK_REGIMES if pre.finite_sinks or not adversarial else SINK_REGIMES
    sink = sinks(gen, cfg.H, draw(st.sampled_from(allowed_sinks), label="sink_regime"))

    inputs = Inputs(q=q, ori_kv=ori_kv, window_swa_indices=windows, cmp_kv=cmp_kv,
                    cmp_block_table=cmp_table, idx_topk=idx, position_ids=position_ids,
                    attn_sink=sink, softmax_scale=cfg.softmax_scale, seq_per_batch=cfg.S,
                    index_topk=cfg.IDX_TOPK, compress_ratio=cfg.ratio)
    dominant = False
    live = torch.cat(live_lanes(inputs), dim=1)
    # `_dominate` places keys token by token: too slow for an edge case's 2^16 tokens
    if (spec["regime"] == "dominant" and cfg.softmax_scale != 0 and bool(live.any())
            and cfg.T <= edges.DOMINATE_MAX_TOKENS):
        inputs = _dominate(inputs, live, gen)
        dominant = True
    extremes = spec["regime"] == "extreme" and _beyond_fp16(inputs)
    inputs = inputs.replace(layout=draw(layouts(inputs), label="layout"))
    return Case(inputs=inputs, config=cfg, path=path, start_pos=start_pos, seed=seed,
                values=spec["regime"], extremes=extremes, dominant=dominant,
                ori_block_table=ori_table, placement=placement, edge=edge)


def _dominate(inputs: Inputs, live: torch.Tensor, gen: torch.Generator) -> Inputs:
    """Per token, boost the row of a drawn live lane to 4x the pools' largest entry (random
    signs) and align the token's query with it (v1's `make_dominant`, on the call viewed as
    one batch of T tokens), so that it out-scores every other live key by 4 to 40 logits."""
    win, block, D = inputs.WIN, inputs.BLOCK, inputs.D
    lane_ids = torch.cat([inputs.window_swa_indices.to(torch.int64),
                          inputs.idx_topk[:, :inputs.index_topk].to(torch.int64)], dim=1)
    where = dominant_positions(gen, live[None], lane_ids[None])[0]
    ori, cmp = inputs.ori_kv.clone(), inputs.cmp_kv.clone()
    big = 4 * max(float(ori.float().abs().max()), float(cmp.float().abs().max()), 1.0)
    table = inputs.cmp_block_table.to(torch.int64)
    for t in torch.nonzero(where >= 0).flatten().tolist():
        k = int(where[t])
        e = int(lane_ids[t, k])
        sign = (torch.randint(0, 2, (D,), generator=gen).float() * 2 - 1) * big
        if k < win:
            ori[e // block, e % block] = sign.to(ori.dtype)
        else:
            cmp[int(table[t // inputs.S, e // block]), e % block] = sign.to(cmp.dtype)
    boosted = inputs.replace(ori_kv=ori, cmp_kv=cmp)
    key_rows, _ = gather_rows(boosted)
    gaps = 4 + 36 * torch.rand(where.shape, generator=gen)
    q = make_dominant(boosted.q[None], key_rows[None], live[None], where[None],
                      inputs.softmax_scale, gaps[None])[0]
    return boosted.replace(q=q)
