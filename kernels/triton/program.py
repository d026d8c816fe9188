"""The Triton program of the `triton` kernel (contract sections 1-3): one program per
`(block of tokens, block of heads)`; each token's length derived in the kernel from
`seqused_kv`, its index row read by value tile by tile, each live entry's row gathered through
its block table, an online softmax over the key tiles (bf16 probabilities into the value
product, as the seed computes them) and the sink in the denominator only.

A program's tensors have a leading token axis (`BLOCK_S` tokens; the dots are batched over
it, so no token's keys or values meet another's: a poisoned row another token reads must not
reach this one's product, not even times 0). On a GPU `BLOCK_S` is 1 (one token a program, the
usual layout); through the interpreter, whose cost is per executed Triton operation, many
tokens share a program (`kernels.triton.kernel.launch_blocks`).

`sparse_attn_program` is a plain Python function: `kernels.triton.kernel` wraps it as a
`triton.jit` kernel on a GPU and as the interpreter's `InterpretedFunction` on the CPU (this
module only needs `triton.language` importable, and imports nothing else of triton).

Seeded bugs (:data:`BUGS`, the catalogue's `mutant-triton-<bug>`) are branches on the
compile-time `BUG` below: each is one visible change in this Triton code.
"""

# No "from __future__ import annotations": triton reads the annotations (tl.constexpr).
import triton.language as tl

#: bug name -> (the BUG constant the program branches on, what it does)
BUGS = {
    "missing-plus-one": (1, "seq_used = seqused_kv[b] - S + s (the '+ 1' is missing)"),
    "sink-dropped": (2, "the sink is left out of the softmax denominator"),
    "unguarded-rescale": (3, "the online rescale exp(m_old - m_new) is not guarded: a fully masked "
                             "first key tile gives exp(-inf + inf) = NaN"),
    "unshifted-exp": (4, "exp(z) without the running-max shift: overflows once logits pass ~88"),
}


def sparse_attn_program(
    q_ptr, ori_ptr, ori_bt_ptr, cmp_ptr, cmp_bt_ptr, idx_ptr, sink_ptr, seqused_ptr, o_ptr,
    scale, T, S, H, D, WIN, TOPK, BLOCK,
    sq_b, sq_s, sq_h, sq_d,
    so_n, so_r, so_d, sob_b, sob_c,
    sc_n, sc_r, sc_d, scb_b, scb_c,
    si_b, si_s, si_k, s_sink, s_seq,
    BLOCK_S: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr,
    BUG: tl.constexpr,
):
    # axis 0: the program's tokens; 64-bit: a pool's element offset may pass 2^31
    tok = (tl.program_id(0) * BLOCK_S + tl.arange(0, BLOCK_S)).to(tl.int64)
    tok_ok = tok < T
    heads = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    head_ok = heads < H
    dims = tl.arange(0, BLOCK_D)
    dim_ok = dims < D
    b = tok // S
    s = tok % S

    # contract section 2: each token's own length, derived from its batch's last token's
    last = tl.load(seqused_ptr + b * s_seq, mask=tok_ok, other=0)
    if BUG == 1:
        seq_used = last - S + s
    else:
        seq_used = last - S + 1 + s
    window_valid = tl.minimum(tl.maximum(seq_used, 0), WIN)[:, None]
    cmp_valid = tl.maximum(seq_used[:, None] - window_valid, 0)

    row_ok = tok_ok[:, None] & head_ok[None, :]
    q_row = (b * sq_b + s * sq_s)[:, None] + heads[None, :] * sq_h
    q = tl.load(q_ptr + q_row[:, :, None] + dims[None, None, :] * sq_d,
                mask=row_ok[:, :, None] & dim_ok[None, None, :], other=0.0)

    m = tl.full([BLOCK_S, BLOCK_H], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_S, BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_S, BLOCK_H, BLOCK_D], tl.float32)
    for start in range(0, TOPK, BLOCK_T):
        pos = start + tl.arange(0, BLOCK_T)
        # contract section 3: entries by value; a tile's padding (-1) is never live
        e = tl.load(idx_ptr + (b * si_b + s * si_s)[:, None] + pos[None, :] * si_k,
                    mask=tok_ok[:, None] & (pos < TOPK)[None, :], other=-1)
        live_w = (e >= 0) & (e < window_valid)
        live_c = (e >= WIN) & (e - WIN < cmp_valid)
        w = tl.where(live_w, e, 0)
        c = tl.where(live_c, e - WIN, 0)
        # mask before gather: a dead entry's table column and row are never read
        w_blk = tl.load(ori_bt_ptr + (b * sob_b)[:, None] + (w // BLOCK) * sob_c, mask=live_w, other=0)
        c_blk = tl.load(cmp_bt_ptr + (b * scb_b)[:, None] + (c // BLOCK) * scb_c, mask=live_c, other=0)
        w_row = w_blk.to(tl.int64) * so_n + (w % BLOCK) * so_r
        c_row = c_blk.to(tl.int64) * sc_n + (c % BLOCK) * sc_r
        k_w = tl.load(ori_ptr + w_row[:, :, None] + dims[None, None, :] * so_d,
                      mask=live_w[:, :, None] & dim_ok[None, None, :], other=0.0)
        k_c = tl.load(cmp_ptr + c_row[:, :, None] + dims[None, None, :] * sc_d,
                      mask=live_c[:, :, None] & dim_ok[None, None, :], other=0.0)
        k = tl.where(live_c[:, :, None], k_c, k_w)
        live = (live_w | live_c)[:, None, :]

        # the scale before the max: a negative scale flips which key is largest
        z = tl.dot(q, tl.permute(k, (0, 2, 1))) * scale
        z = tl.where(live, z, float("-inf"))
        m_new = tl.maximum(m, tl.max(z, 2))
        # the shift of a row with nothing live yet: 0, so that nothing computes -inf + inf
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        if BUG == 3:
            alpha = tl.exp(m - m_new)
        else:
            # an empty history (m = -inf) contributes nothing: exp(-inf - shift) = 0
            alpha = tl.exp(m - shift)
        if BUG == 4:
            p = tl.where(live, tl.exp(z), 0.0)
            alpha = tl.where(m == float("-inf"), 0.0, 1.0)
        else:
            p = tl.where(live, tl.exp(z - shift[:, :, None]), 0.0)
        l = l * alpha + tl.sum(p, 2)
        acc = acc * alpha[:, :, None] + tl.dot(p.to(tl.bfloat16), k)
        m = m_new

    sink = tl.load(sink_ptr + heads * s_sink, mask=head_ok, other=0.0)[None, :]
    if BUG == 2:
        den = l
    elif BUG == 4:
        den = l + tl.exp(sink)
    else:
        den = l + tl.exp(sink - tl.where(m == float("-inf"), 0.0, m))
    o = acc / den[:, :, None]
    # a token with no live entry returns exactly 0 (contract section 3)
    o = tl.where((m == float("-inf"))[:, :, None], 0.0, o)
    out = o_ptr + ((tok * H)[:, None] + heads[None, :])[:, :, None] * D + dims[None, None, :]
    tl.store(out, o.to(tl.bfloat16), mask=row_ok[:, :, None] & dim_ok[None, None, :])
