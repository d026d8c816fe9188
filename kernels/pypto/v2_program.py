"""The pypto program for calling convention v2 (``contracts.v2``, docs/contract.md sections
8-11): per-token flat window rows, raw compressed slot ids cut by position in the kernel.

One compiled program per padded shape and compress ratio (:class:`V2Dims`) and bug set. The
program is vectorised over the ``T = B*S`` tokens. The window lanes and the compressed lanes
are separate arrays, so every key tile of ``KT`` lanes is either all window or all
compressed: first the window tiles, then the compressed tiles, merged by the online softmax
of :mod:`kernels.pypto.program` (its step and its finish are shared, not copied).

Liveness, derived here in the kernel:
- window lane: ``w >= 0``; it reads flat row ``w`` of the ori pool;
- compressed lane: ``0 <= c < (pos + 1) // r`` (no cut when ``r`` is None). The cut is
  evaluated in int32, never in fp32 (which is exact only below 2**24): pypto 0.2.0's
  interpreter has no integer division, so the program uses the equivalent
  ``c * r <= pos - (r - 1)`` for ``0 <= c <= 2**31 // r - 1``, a range in which ``c * r``
  cannot overflow (and no larger ``c`` is below the bound: ``pos + 1 <= 2**31``).

An ignored lane's own address is never read: its index is multiplied by its 0/1 int mask
first (it reads flat row 0, a safe address), and its row is then replaced by zeros with a
select, so a NaN behind it cannot reach QK or PV. Only a live compressed slot, which the
contract keeps inside the block table (so below 2**24 for the declared buckets), is turned
into a table column in fp32. The column and the pool row are clamped into the padded table
and pool, a no-op for every lane the contract makes live: a seeded liveness bug then reads
a wrong row, as on a device, where pypto's interpreter would raise. (pypto 0.2.0 facts: see
:mod:`kernels.pypto.program`; here also: ``where(cond, int tensor, scalar)`` fails, integer
comparisons with float scalars and between int tensors are exact.)
"""

# No "from __future__ import annotations": pypto reads the annotations as objects.
from dataclasses import dataclass

from sparse_attn_conformance.kernels.pypto.program import NEG, finish, jit_options, softmax_step

#: bug name -> what it does (the catalogue lists each as ``mutant-pypto-v2-<bug>``)
BUGS = {
    "cut-inclusive": "compressed slot c is live while c <= (pos + 1) // r (one slot too many)",
    "window-positive": "window lane w is live only while w > 0 (flat row 0 is never attended)",
    "cut-fp32": "the cut in fp32, c < floor((pos + 1) * (1/r)), as upstream's kernel computes "
                "it: past 2**24 rounding lets the slot id at the true cut in",
}

#: int32 range: positions and slot ids may reach it; 2**31 // r bounds the overflow-free c.
INT32_LIMIT = 2**31


@dataclass(frozen=True)
class V2Dims:
    """Padded compile-time shape of one v2 program, and its compress ratio."""

    B: int
    S: int
    H: int
    D: int
    WIN: int  # window lanes, a multiple of KT
    IDX: int  # compressed lanes read (index_topk), a multiple of KT
    BLOCK: int
    M: int  # cmp_block_table columns
    NO: int  # ori_kv blocks
    NC: int  # cmp_kv blocks
    KT: int  # key tile (lanes per online-softmax step)
    ratio: int | None  # compress_ratio: None keeps every slot id >= 0


def build_program(dims: V2Dims, bugs: frozenset = frozenset(), mode: str = "sim",
                  verify_passes: bool = False):
    """Return a ``pypto.frontend.jit`` kernel for ``dims`` with the named ``bugs``
    (``mode``, ``verify_passes``: as :func:`kernels.pypto.program.build_program`).

    Kernel arguments (all CPU torch tensors, last one written):
    q [T,H,D] bf16, ori_kv [NO*BLOCK,D] bf16, win [T,WIN] i32, cmp_kv [NC*BLOCK,D] bf16,
    cmp_bt [B,M] i32, idx [T,IDX] i32, pos [T,1] i32, sink [1,H,1] f32,
    scale [T,H,1] f32 (filled), out [T,H,D] f32.
    """
    import pypto

    unknown = set(bugs) - set(BUGS)
    if unknown:
        raise ValueError(f"bugs: unknown names {sorted(unknown)}, expected a subset of {sorted(BUGS)}")
    B, S, H, D, WIN, IDX = dims.B, dims.S, dims.H, dims.D, dims.WIN, dims.IDX
    BLOCK, M, NO, NC, KT, ratio = dims.BLOCK, dims.M, dims.NO, dims.NC, dims.KT, dims.ratio
    if WIN % KT or IDX % KT:
        raise ValueError(f"dims.WIN and dims.IDX must be multiples of KT={KT}, got {WIN}, {IDX}")
    if ratio is not None and (not isinstance(ratio, int) or ratio < 1):
        raise ValueError(f"dims.ratio: expected None or an int >= 1, got {ratio!r}")
    T = B * S
    cut_inclusive = "cut-inclusive" in bugs
    window_live_min = 1.0 if "window-positive" in bugs else 0.0
    cut_fp32 = "cut-fp32" in bugs and ratio is not None
    # c * r <= rhs decides the cut. Correct: rhs = pos - (r - 1), i.e. c < (pos+1)//r; the
    # mutant's rhs = pos + 1 is c <= (pos+1)//r.
    rhs_shift = ratio if cut_inclusive and ratio is not None else 0
    # cmax: the largest c for which c * r fits int32 (None: no cut).
    cmax = None if ratio is None else INT32_LIMIT // ratio - 1
    options = jit_options(mode, verify_passes)
    f32, i32 = pypto.DT_FP32, pypto.DT_INT32

    @pypto.frontend.jit(**options)
    def sparse_attn_v2_kernel(
        q: pypto.Tensor((T, H, D), pypto.DT_BF16),
        ori_kv: pypto.Tensor((NO * BLOCK, D), pypto.DT_BF16),
        win: pypto.Tensor((T, WIN), pypto.DT_INT32),
        cmp_kv: pypto.Tensor((NC * BLOCK, D), pypto.DT_BF16),
        cmp_bt: pypto.Tensor((B, M), pypto.DT_INT32),
        idx: pypto.Tensor((T, IDX), pypto.DT_INT32),
        pos: pypto.Tensor((T, 1), pypto.DT_INT32),
        sink: pypto.Tensor((1, H, 1), pypto.DT_FP32),
        scale: pypto.Tensor((T, H, 1), pypto.DT_FP32),
        out: pypto.Tensor((T, H, D), pypto.DT_FP32),
    ):
        pypto.set_cube_tile_shapes([16, 16], [16, 16], [16, 16])
        # Token t belongs to batch b = t // S (exact in fp32: t < 2**24).
        pypto.set_vec_tile_shapes(64)
        tok = pypto.cast(pypto.arange(T), f32)
        b_i = pypto.cast(pypto.floor((tok + 0.5) * (1.0 / S)), i32)
        pypto.set_vec_tile_shapes(16, 64)
        cbt = pypto.cast(pypto.index_select(cmp_bt, 0, b_i), f32)  # [T, M] token's table
        if cmax is not None and cmax >= 1:
            rhs = pos - (ratio - 1 - rhs_shift)  # [T, 1] int32, no overflow
        if cut_fp32:
            bound_f = pypto.floor((pypto.cast(pos, f32) + 1.0) * (1.0 / ratio))  # [T, 1]
        pypto.set_vec_tile_shapes(16, 16, 64)
        m = pypto.full([T, H, 1], NEG, f32)
        l = pypto.full([T, H, 1], 0.0, f32)
        acc = pypto.full([T, H, D], 0.0, f32)
        for j in range(WIN // KT):
            pypto.set_vec_tile_shapes(16, 64)
            w = pypto.view(win, [T, KT], [0, j * KT])
            wlf = pypto.where(w >= window_live_min, 1.0, 0.0)
            # ignored lanes read flat row 0 (int multiply: w may be any int32)
            row = pypto.reshape(w * pypto.cast(wlf, i32), [T * KT])
            wl1 = pypto.reshape(wlf, [T * KT, 1])
            pypto.set_vec_tile_shapes(64, 64)
            kw = pypto.index_select(ori_kv, 0, row)
            # Select (not multiply) so a NaN in row 0 never reaches QK or PV.
            k2 = pypto.where(wl1 > 0.5, kw, 0.0)
            pypto.set_vec_tile_shapes(16, 16, 64)
            k = pypto.reshape(k2, [T, KT, D])  # K = V: one latent row per lane
            live3 = pypto.reshape(wlf, [T, 1, KT])
            m, l, acc = softmax_step(q, k, live3, scale, m, l, acc)
        for j in range(IDX // KT):
            pypto.set_vec_tile_shapes(16, 64)
            c = pypto.view(idx, [T, KT], [0, j * KT])
            # 0/1 masks in fp32 (an int or bool mask used by several ops makes pypto 0.2.0
            # insert an untiled REGISTER_COPY); the comparisons themselves are on int32.
            if cmax is None:
                clf = pypto.where(c >= 0.0, 1.0, 0.0)
            elif cut_fp32:
                clf = pypto.where(c >= 0.0, 1.0, 0.0) * pypto.where(pypto.cast(c, f32) < bound_f, 1.0, 0.0)
            elif cmax < 0:
                clf = pypto.full([T, KT], 0.0, f32)  # r > 2**31: (pos+1) // r == 0 always
            elif cmax == 0:
                # r > 2**30 (c * r may not fit): only slot 0, once pos + 1 >= r
                clf = (pypto.where(c >= 0.0, 1.0, 0.0) * pypto.where(c <= 0.0, 1.0, 0.0)
                       * pypto.where(pos >= float(ratio - 1), 1.0, 0.0))
            else:
                clf = (pypto.where(c >= 0.0, 1.0, 0.0) * pypto.where(c <= float(cmax), 1.0, 0.0)
                       * pypto.where(c * ratio <= rhs, 1.0, 0.0))
            # Dead lanes become slot 0 (int multiply: c may be any int32), so the table
            # lookup stays in bounds; a live slot is inside the table, exact in fp32.
            sc = pypto.cast(c * pypto.cast(clf, i32), f32)
            col = pypto.floor(sc * (1.0 / BLOCK))
            off = sc - col * BLOCK
            # Column and pool row are clamped into the padded table and pool: no-ops for
            # the live lanes the contract allows, but a wrong liveness rule (the seeded
            # bugs) then reads a wrong row, as a device does, instead of making the
            # simulator raise on an out-of-bounds gather.
            blk = pypto.gather(cbt, 1, pypto.cast(pypto.minimum(col, float(M - 1)), i32))
            row_at = pypto.minimum(pypto.maximum(blk * BLOCK + off, 0.0), float(NC * BLOCK - 1))
            # ... and pool row 0, whatever the table holds there.
            rowc = pypto.where(clf > 0.5, row_at, 0.0)
            rowc1 = pypto.cast(pypto.reshape(rowc, [T * KT]), i32)
            cl1 = pypto.reshape(clf, [T * KT, 1])
            pypto.set_vec_tile_shapes(64, 64)
            kc = pypto.index_select(cmp_kv, 0, rowc1)
            k2 = pypto.where(cl1 > 0.5, kc, 0.0)
            pypto.set_vec_tile_shapes(16, 16, 64)
            k = pypto.reshape(k2, [T, KT, D])
            live3 = pypto.reshape(clf, [T, 1, KT])
            m, l, acc = softmax_step(q, k, live3, scale, m, l, acc)
        pypto.set_vec_tile_shapes(16, 16, 64)
        out[:] = finish(sink, m, l, acc)

    return sparse_attn_v2_kernel
