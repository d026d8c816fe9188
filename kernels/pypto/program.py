"""The pypto program: DeepSeek-V4 sparse decode attention (contract sections 1-3).

One compiled program per padded shape (:class:`ProgramDims`) and bug set. The program is
vectorised over the ``T = B*S`` tokens and walks the index row in key tiles of ``KT``
entries with an online softmax. Everything the contract derives is derived here, in the
kernel: the token's batch and step from its flat position, ``seq_used``, ``window_valid``,
``cmp_valid``, the liveness of every entry, and the pool row each live entry addresses.

pypto 0.2.0 facts this code is shaped by (each found by a failing build here):
- integer ``//``, ``%`` and integer-scalar comparisons do not run in the interpreter, so
  index arithmetic is done in fp32 (exact: every live value is < 2**24; huge int32 values
  round to huge floats and stay out of range);
- ``index_select`` with a 2-D index fails a compiler pass: gather with a flat index, reshape;
- a bool tensor used by several ops triggers an untiled REGISTER_COPY: masks are 0/1 fp32
  and each ``where`` compares afresh;
- every op needs vec tile shapes of its own rank set before it.

Faulty variants ("bugs") are one visible change each, chosen by name in :data:`BUGS`; the
kernel catalogue (:mod:`kernels.registry`) lists each as ``mutant-pypto-<bug>``.
"""

# No "from __future__ import annotations": pypto reads the annotations as objects.
from dataclasses import dataclass

# Finite "minus infinity": keeps a fully masked tile free of inf - inf = NaN. It must lie
# below every logit the contract allows (|logit| <= 2**120, about 1.3e36, docs/contract.md
# section 5): at -1e30, a token whose live logits were all below it got no weight at all
# and returned 0 (found by the suite's extreme value regime).
NEG = -3.0e38

#: bug name -> what it does
BUGS = {
    "missing-plus-one": "seq_used = seqused_kv[b] - S + s (the '+ 1' is missing)",
    "sink-dropped": "the sink is left out of the softmax denominator",
    "window-inclusive": "window slot e is live while e <= window_valid (one slot too many); "
                        "pypto's interpreter raises on the out-of-table read it can cause",
}


@dataclass(frozen=True)
class ProgramDims:
    """Padded compile-time shape of one program."""

    B: int
    S: int
    H: int
    D: int
    WIN: int
    TOPK: int
    BLOCK: int
    NW: int  # ori_block_table columns
    M: int  # cmp_block_table columns
    NO: int  # ori_kv blocks
    NC: int  # cmp_kv blocks
    KT: int  # key tile (entries per online-softmax step)


def jit_options(mode: str, verify_passes: bool) -> dict:
    """``pypto.frontend.jit`` options for ``mode`` (see :func:`build_program`)."""
    import pypto

    options = {"runtime_options": {
        "run_mode": pypto.RunMode.SIM if mode == "sim" else pypto.RunMode.NPU}}
    if mode == "sim":
        vopts = {"enable_pass_verify": True}
        if not verify_passes:
            vopts["pass_verify_pass_filter"] = ["no_verify"]  # what set_verify_options([]) sets
        options["verify_options"] = vopts
    return options


def softmax_step(q, k, live3, scale, m, l, acc):
    """One online-softmax step over a key tile, traced inside a jit kernel: ``q`` [T,H,D]
    bf16, ``k`` [T,KT,D] bf16 (K = V; ignored lanes already zero rows), ``live3`` [T,1,KT]
    0/1 fp32, running ``m``, ``l`` [T,H,1] and ``acc`` [T,H,D] fp32. Returns the new ones."""
    import pypto

    f32, bf16 = pypto.DT_FP32, pypto.DT_BF16
    z = pypto.matmul(q, k, f32, b_trans=True) * scale
    zm = pypto.where(live3 > 0.5, z, NEG)
    m_new = pypto.maximum(m, pypto.amax(zm, -1, keepdim=True))
    alpha = pypto.exp(m - m_new)
    p = pypto.where(live3 > 0.5, pypto.exp(zm - m_new), 0.0)
    l = l * alpha + pypto.sum(p, -1, keepdim=True)
    acc = acc * alpha + pypto.matmul(pypto.cast(p, bf16), k, f32)
    return m_new, l, acc


def finish(sink, m, l, acc, sink_in_denominator: bool = True):
    """The output from the merged state: the sink (``[1,H,1]`` fp32) in the denominator only;
    a token without a live entry (``l == 0``, ``acc == 0``) gets exactly 0, never 0/0."""
    import pypto

    den = l + pypto.exp(sink - m) if sink_in_denominator else l
    return pypto.where(l > 0.0, acc / den, 0.0)


def build_program(dims: ProgramDims, bugs: frozenset = frozenset(), mode: str = "sim",
                  verify_passes: bool = False):
    """Return a ``pypto.frontend.jit`` kernel for ``dims`` with the named ``bugs``.

    ``mode`` (``"sim"`` or ``"npu"``, as :func:`kernels.pypto.worker.run_mode` decided) is
    passed to pypto explicitly. In simulation pypto's pass verification is on, which the
    simulation needs: without it the CPU run leaves the output untouched. ``verify_passes``
    additionally checks every compiler pass against the tensor-graph result (pypto's default
    filter), which costs time and does not change the output; off, pypto's ``["no_verify"]``
    filter skips those checks.

    Kernel arguments (all CPU torch tensors, last one written):
    q [T,H,D] bf16, ori_kv [NO*BLOCK,D] bf16, ori_bt [B,NW] i32, cmp_kv [NC*BLOCK,D] bf16,
    cmp_bt [B,M] i32, idx [T,TOPK] i32, sink [1,H,1] f32, seqused [B] i32,
    scale [T,H,1] f32 (filled; pypto broadcasts one axis at a time), out [T,H,D] f32.
    """
    import pypto

    unknown = set(bugs) - set(BUGS)
    if unknown:
        raise ValueError(f"bugs: unknown names {sorted(unknown)}, expected a subset of {sorted(BUGS)}")
    B, S, H, D, WIN, TOPK = dims.B, dims.S, dims.H, dims.D, dims.WIN, dims.TOPK
    BLOCK, NW, M, NO, NC, KT = dims.BLOCK, dims.NW, dims.M, dims.NO, dims.NC, dims.KT
    if TOPK % KT:
        raise ValueError(f"dims.TOPK must be a multiple of KT={KT}, got {TOPK}")
    T = B * S
    NT = TOPK // KT
    # The seed derivation is seqused[b] - S + 1 + s; the mutant forgets the + 1.
    step_offset = float(S) if "missing-plus-one" in bugs else float(S - 1)
    sink_in_denominator = "sink-dropped" not in bugs
    window_inclusive = "window-inclusive" in bugs
    options = jit_options(mode, verify_passes)
    f32, i32 = pypto.DT_FP32, pypto.DT_INT32

    @pypto.frontend.jit(**options)
    def sparse_attn_kernel(
        q: pypto.Tensor((T, H, D), pypto.DT_BF16),
        ori_kv: pypto.Tensor((NO * BLOCK, D), pypto.DT_BF16),
        ori_bt: pypto.Tensor((B, NW), pypto.DT_INT32),
        cmp_kv: pypto.Tensor((NC * BLOCK, D), pypto.DT_BF16),
        cmp_bt: pypto.Tensor((B, M), pypto.DT_INT32),
        idx: pypto.Tensor((T, TOPK), pypto.DT_INT32),
        sink: pypto.Tensor((1, H, 1), pypto.DT_FP32),
        seqused: pypto.Tensor((B,), pypto.DT_INT32),
        scale: pypto.Tensor((T, H, 1), pypto.DT_FP32),
        out: pypto.Tensor((T, H, D), pypto.DT_FP32),
    ):
        pypto.set_cube_tile_shapes([16, 16], [16, 16], [16, 16])
        # Per token t: b = t // S, s = t % S, seq_used = seqused[b] - S + 1 + s.
        pypto.set_vec_tile_shapes(64)
        tok = pypto.cast(pypto.arange(T), f32)
        b_f = pypto.floor((tok + 0.5) * (1.0 / S))
        s_f = tok - b_f * S
        b_i = pypto.cast(b_f, i32)
        seq_final = pypto.cast(pypto.index_select(seqused, 0, b_i), f32)
        seq_used = seq_final - step_offset + s_f
        window_valid = pypto.minimum(pypto.maximum(seq_used, 0.0), float(WIN))
        cmp_valid = pypto.maximum(seq_used - window_valid, 0.0)
        pypto.set_vec_tile_shapes(16, 64)
        wv = pypto.reshape(window_valid, [T, 1])
        cv = pypto.reshape(cmp_valid, [T, 1])
        obt = pypto.cast(pypto.index_select(ori_bt, 0, b_i), f32)  # [T, NW] token's table
        cbt = pypto.cast(pypto.index_select(cmp_bt, 0, b_i), f32)  # [T, M]
        pypto.set_vec_tile_shapes(16, 16, 64)
        m = pypto.full([T, H, 1], NEG, f32)
        l = pypto.full([T, H, 1], 0.0, f32)
        acc = pypto.full([T, H, D], 0.0, f32)
        for j in range(NT):
            pypto.set_vec_tile_shapes(16, 64)
            e = pypto.cast(pypto.view(idx, [T, KT], [0, j * KT]), f32)
            # Liveness by value: window slot in [0, wv), compressed slot in [WIN, WIN+cv).
            in_window = e <= wv if window_inclusive else e < wv
            wl = pypto.where(e >= 0.0, 1.0, 0.0) * pypto.where(in_window, 1.0, 0.0)
            cl = pypto.where(e >= float(WIN), 1.0, 0.0) * pypto.where(e < cv + float(WIN), 1.0, 0.0)
            # Dead entries get slot 0 so every table lookup stays in bounds ...
            sw = pypto.where(wl > 0.5, e, 0.0)
            sc = pypto.where(cl > 0.5, e - float(WIN), 0.0)
            colw = pypto.floor(sw * (1.0 / BLOCK))
            colc = pypto.floor(sc * (1.0 / BLOCK))
            blkw = pypto.gather(obt, 1, pypto.cast(colw, i32))
            blkc = pypto.gather(cbt, 1, pypto.cast(colc, i32))
            # ... and pool row 0, whatever the table holds there.
            roww = pypto.where(wl > 0.5, blkw * BLOCK + (sw - colw * BLOCK), 0.0)
            rowc = pypto.where(cl > 0.5, blkc * BLOCK + (sc - colc * BLOCK), 0.0)
            live = pypto.maximum(wl, cl)
            wl1 = pypto.reshape(wl, [T * KT, 1])
            cl1 = pypto.reshape(cl, [T * KT, 1])
            roww1 = pypto.cast(pypto.reshape(roww, [T * KT]), i32)
            rowc1 = pypto.cast(pypto.reshape(rowc, [T * KT]), i32)
            pypto.set_vec_tile_shapes(64, 64)
            kw = pypto.index_select(ori_kv, 0, roww1)
            kc = pypto.index_select(cmp_kv, 0, rowc1)
            # Select (not multiply) so a NaN in pool row 0 never reaches QK or PV.
            k2 = pypto.where(wl1 > 0.5, kw, pypto.where(cl1 > 0.5, kc, 0.0))
            pypto.set_vec_tile_shapes(16, 16, 64)
            k = pypto.reshape(k2, [T, KT, D])  # K = V: one latent row per entry
            live3 = pypto.reshape(live, [T, 1, KT])
            m, l, acc = softmax_step(q, k, live3, scale, m, l, acc)
        pypto.set_vec_tile_shapes(16, 16, 64)
        out[:] = finish(sink, m, l, acc, sink_in_denominator)

    return sparse_attn_kernel
