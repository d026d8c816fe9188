"""Whole kernel calls: a configuration, lengths, index rows, pools and values, composed."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from kernels.contract import Inputs, Preconditions, derived_lengths, live_mask
from strategies.config import Config, configs
from strategies.lengths import model_seqused, n_compressed, out_of_model_seqused, start_positions
from strategies.pools import block_table, fill_pool
from strategies.rows import adversarial_row, canonical_row, row_recipes

#: Typical logit spread per example: tame to large (softmax nearly one-hot).
LOGIT_SCALES = (1.0, 0.0, 0.1, 4.0, 16.0, 64.0)
VALUE_DISTS = ("normal", "small_ints", "positive")


@dataclass(frozen=True)
class Case:
    """One generated call and how it was made.

    path: "SWA", "HCA" or "CSA" for model-written rows; "adversarial" otherwise.
    start_pos: per-batch start positions when the lengths follow the model, else None.
    """

    inputs: Inputs
    config: Config
    path: str
    start_pos: tuple[int, ...] | None
    seed: int

    def _repr_pretty_(self, p, cycle) -> None:  # Hypothesis prints draws with this
        p.text(repr(self))

    def __repr__(self) -> str:
        return f"Case({self.inputs!r}, path={self.path}, seed={self.seed})"

    def size(self) -> dict:
        """The size of this case, as reported for a shrunk counterexample."""
        live = live_mask(self.inputs.topk_idxs, self.inputs.seqused_kv, self.config.WIN)
        return {"B": self.config.B, "S": self.config.S, "tokens": self.config.B * self.config.S,
                "live_entries": int(live.sum())}

    def describe(self) -> str:
        """A compact, readable dump for failure messages."""
        c, i = self.config, self.inputs
        _, wv, cv = derived_lengths(i.seqused_kv, c.S, c.WIN)
        lines = [
            f"config: B={c.B} S={c.S} H={c.H} D={c.D} WIN={c.WIN} IDX_TOPK={c.IDX_TOPK} "
            f"BLOCK={c.BLOCK} ratio={c.ratio} softmax_scale={c.softmax_scale:.6g}",
            f"path={self.path} start_pos={self.start_pos} seed={self.seed}",
            f"seqused_kv={i.seqused_kv.tolist()} attn_sink={i.attn_sink.tolist()}",
            f"window_valid[b][s]={wv.tolist()} cmp_valid[b][s]={cv.tolist()}",
        ]
        for b in range(c.B):
            for s in range(c.S):
                row = i.topk_idxs[b, s].tolist()
                shown = row if len(row) <= 24 else row[:24] + ["..."]
                lines.append(f"topk_idxs[{b},{s}]={shown}")
        return "\n".join(lines)


def _pools(gen, cfg: Config, cmp_slots: int, spare_ori: int, spare_cmp: int, extra_cols: int,
           kv_scale: float, dist: str):
    ori_cols = -(-cfg.WIN // cfg.BLOCK)
    ori_table, n_ori = block_table(gen, cfg.B, ori_cols, spare_ori)
    cmp_cols = max(1, -(-cmp_slots // cfg.BLOCK)) + extra_cols
    cmp_table, n_cmp = block_table(gen, cfg.B, cmp_cols, spare_cmp)
    ori_kv = fill_pool(gen, n_ori, cfg.BLOCK, cfg.D, kv_scale, dist)
    cmp_kv = fill_pool(gen, n_cmp, cfg.BLOCK, cfg.D, kv_scale, dist)
    return ori_kv, ori_table, cmp_kv, cmp_table


@st.composite
def cases(draw, pre: Preconditions = Preconditions(), adversarial: bool | None = None,
          config: Config | None = None, sinks=("finite", "+inf", "-inf"),
          unwrapped: bool = False) -> Case:
    """A valid kernel call meeting `pre`.

    adversarial: True for adversarial rows and out-of-model lengths, False for model
        rows only, None to draw either (kernels with `canonical_rows` always get model rows).
    unwrapped: model lengths only from start positions whose window ring has not wrapped.
    """
    cfg = config if config is not None else draw(configs(pre))
    if pre.canonical_rows:
        adversarial = False
    if adversarial is None:
        adversarial = draw(st.booleans(), label="adversarial")
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    gen = torch.Generator().manual_seed(seed)

    if adversarial:
        start_pos = None
        if draw(st.booleans(), label="model_lengths"):
            start_pos = draw(start_positions(cfg))
            seqused = [model_seqused(cfg, p) for p in start_pos]
        else:
            seqused = list(draw(out_of_model_seqused(cfg)))
        path = "adversarial"
    else:
        start_pos = draw(start_positions(cfg, unwrapped=unwrapped))
        seqused = [model_seqused(cfg, p) for p in start_pos]
        path = "SWA" if cfg.ratio == 0 else (
            "HCA" if pre.canonical_rows else draw(st.sampled_from(("HCA", "CSA")), label="path"))
    seqused_t = torch.tensor(seqused, dtype=torch.int32)
    _, window_valid, cmp_valid = derived_lengths(seqused_t, cfg.S, cfg.WIN)

    rows = torch.full((cfg.B, cfg.S, cfg.TOPK), -1, dtype=torch.int32)
    cmp_slots = int(cmp_valid.max())
    for b in range(cfg.B):
        if not adversarial:
            n_cmp = n_compressed(cfg, start_pos[b])
            order = torch.randperm(n_cmp, generator=gen) if path == "CSA" else None
            rows[b, :] = torch.tensor(canonical_row(cfg, seqused[b], n_cmp, order))
            cmp_slots = max(cmp_slots, min(n_cmp, cfg.IDX_TOPK) if path == "HCA" else n_cmp)
            continue
        shared = draw(st.booleans(), label=f"shared_row[{b}]")
        recipe = None
        for s in range(cfg.S):
            if recipe is None or not shared:
                recipe = draw(row_recipes(cfg.TOPK), label=f"recipe[{b},{s}]")
            # a shared row is built against the last token's lengths, so its entries are
            # live for the last token and partly dead for the earlier ones
            ref = cfg.S - 1 if shared else s
            rows[b, s] = torch.tensor(adversarial_row(
                recipe, cfg, int(window_valid[b, ref]), int(cmp_valid[b, ref]), gen))

    spare_ori = draw(st.integers(0, 2), label="spare_ori_blocks")
    spare_cmp = draw(st.integers(0, 2), label="spare_cmp_blocks")
    extra_cols = draw(st.integers(0, 1), label="extra_cmp_columns")
    logit = draw(st.sampled_from(LOGIT_SCALES), label="logit_scale")
    dist = draw(st.sampled_from(VALUE_DISTS), label="value_dist")
    kv_scale = draw(st.sampled_from((1.0, 0.25, 8.0)), label="kv_scale")
    ori_kv, ori_table, cmp_kv, cmp_table = _pools(
        gen, cfg, cmp_slots, spare_ori, spare_cmp, extra_cols, kv_scale, dist)

    # q is scaled so that the logits' spread is about `logit` whatever D and the kv scale
    q_scale = logit / max(cfg.softmax_scale * kv_scale * cfg.D**0.5, 1e-6)
    q = (torch.randn(cfg.B, cfg.S, cfg.H, cfg.D, generator=gen) * q_scale).to(torch.bfloat16)
    allowed_sinks = ("finite",) if pre.finite_sinks or not adversarial else sinks
    kinds = [draw(st.sampled_from(allowed_sinks), label=f"sink[{h}]") for h in range(cfg.H)]
    finite = torch.randn(cfg.H, generator=gen) * 2.0
    sink = torch.tensor([{"finite": float(f), "+inf": float("inf"), "-inf": float("-inf")}[k]
                         for k, f in zip(kinds, finite.tolist(), strict=True)],
                        dtype=torch.float32)

    inputs = Inputs(q=q, ori_kv=ori_kv, ori_block_table=ori_table, cmp_kv=cmp_kv,
                    cmp_block_table=cmp_table, topk_idxs=rows, attn_sink=sink,
                    seqused_kv=seqused_t, softmax_scale=cfg.softmax_scale, window_size=cfg.WIN)
    return Case(inputs=inputs, config=cfg, path=path, start_pos=start_pos, seed=seed)
