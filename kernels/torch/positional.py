"""A kernel that reads the index row by position, as the seed kernel does (contract
section 4): the first `window_valid` window slots as one contiguous run, and the compressed
entries at row positions `[WIN, WIN + min(IDX_TOPK, cmp_valid))` without checking them.

It is correct only on canonical rows, and declares so: the suite then draws only model
rows for it, and reports what that leaves out. It shows how a kernel with preconditions
plugs in.
"""

from __future__ import annotations

import torch

from sparse_attn_conformance.contracts.v1 import Preconditions, derived_lengths, validate


def sparse_attn(**kw) -> torch.Tensor:
    inputs = validate(**kw)
    B, S, H, D = inputs.q.shape
    win, block = inputs.window_size, inputs.BLOCK
    _, window_valid, cmp_valid = derived_lengths(inputs.seqused_kv, S, win)
    out = torch.zeros(B, S, H, D)
    for b in range(B):
        for s in range(S):
            wv = int(window_valid[b, s])
            n_cmp = min(inputs.IDX_TOPK, int(cmp_valid[b, s]))
            slots = torch.arange(wv)
            keys = [inputs.ori_kv[inputs.ori_block_table[b, slots // block].long(), slots % block]]
            c = inputs.topk_idxs[b, s, win:win + n_cmp].long() - win
            keys.append(inputs.cmp_kv[inputs.cmp_block_table[b, c // block].long(), c % block])
            k = torch.cat(keys).float()
            if k.shape[0] == 0:
                continue
            z = inputs.softmax_scale * (inputs.q[b, s].float().contiguous() @ k.T)
            m = z.amax(dim=-1, keepdim=True)
            p = torch.exp(z - m)
            denom = p.sum(dim=-1, keepdim=True) + torch.exp(inputs.attn_sink[:, None] - m)
            out[b, s] = (p @ k) / denom
    return out


sparse_attn.preconditions = Preconditions(
    canonical_rows=True,
    note="reads the index row by position, as the seed kernel at 058894ff does",
)
