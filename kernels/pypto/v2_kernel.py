"""Public entry point of the pypto kernel for calling convention v2, and its faulty variants.

``sparse_attn(**v2_kwargs)`` validates the call (``contracts.v2.validate``), pads it to a
shape bucket, runs the pypto program (:mod:`kernels.pypto.v2_program`) in the isolated worker
(:mod:`kernels.pypto.runtime`) and returns ``o`` ``[T, H, D]`` fp32 on the CPU.

Shape space (the v1 pypto kernel's small buckets, :data:`PRECONDITIONS`); padding preserves
semantics: ``B`` to a power of two with extra batches whose lanes are all ``-1`` (nothing
live; their outputs are dropped), window and compressed lanes to a multiple of the key tile
with ``-1`` lanes (ignored by both rules), pools and the block table to powers of two (never
addressed by a live lane). Only the first ``index_topk`` columns of ``idx_topk`` are passed:
the contract never reads the rest. The compressed cut is computed in the program, from
``position_ids`` and ``compress_ratio`` (a compile-time constant, as upstream's); no packing.
"""

from __future__ import annotations

import math

import torch

from sparse_attn_conformance.contracts.checks import ContractError
from sparse_attn_conformance.contracts.v2 import Preconditions, validate
from sparse_attn_conformance.kernels.pypto.kernel import _bucket, key_tile
from sparse_attn_conformance.kernels.pypto.runtime import (
    DEFAULT_TIMEOUT_S,
    default_worker,
    run_program,
)
from sparse_attn_conformance.kernels.pypto.v2_program import BUGS, V2Dims

PRECONDITIONS = Preconditions(
    # The v1 pypto kernel's buckets: non-powers of two in D, WIN, BLOCK and H on purpose.
    dims={"H": (2, 3), "D": (16, 24), "WIN": (8, 12), "BLOCK": (4, 6), "S": (1, 2),
          "IDX_TOPK": (4, 8, 16), "B": (1, 2, 3, 4)},
    # the compressed block table is padded to at most 256 columns (pypto 0.2.0 fails to
    # compile the gather past that); positions stay free up to int32
    max_cmp_columns=256,
    note=("pypto 0.2.0 runs here through its tensor-graph interpreter, seconds per call: dims "
          "are drawn from small buckets and padded; one program per compress_ratio (None "
          "included). The cut is exact in int32 for every position; ignored lanes read flat "
          "row 0 and are discarded by a select, so no semantic preconditions."),
)

#: fp32 turns a live compressed slot into a block-table column and a pool row: exact below.
FP32_EXACT = 2**24

_last_verify: dict | None = None


def plan(inputs) -> tuple[V2Dims, list[torch.Tensor]]:
    """Padded program dims and the kernel's argument tensors (output buffer last)."""
    S, B, H, D = inputs.S, inputs.B, inputs.H, inputs.D
    BLOCK, WIN, IDX = inputs.BLOCK, inputs.WIN, inputs.IDX_TOPK
    M, NC = inputs.cmp_block_table.shape[1], inputs.cmp_kv.shape[0]
    if NC * BLOCK > FP32_EXACT or M * BLOCK > FP32_EXACT:
        raise ContractError(f"cmp_kv / cmp_block_table: the pypto v2 kernel addresses compressed "
                            f"slots and rows in fp32, exact up to {FP32_EXACT}; got "
                            f"{NC} blocks and {M} columns of BLOCK={BLOCK}")
    Bp = 1 if B == 1 else _bucket(max(B, 2), (2, 4, 8, 16, 32, 64))
    KT = key_tile(WIN + IDX)
    WINp = KT * math.ceil(WIN / KT)
    IDXp = KT * max(1, math.ceil(IDX / KT))  # index_topk 0: one tile of ignored lanes
    Mp = _bucket(M, (2, 4, 8, 16, 32, 64, 128, 256))
    NOp = _bucket(inputs.ori_kv.shape[0], (4, 8, 16, 32, 64, 128, 256))
    NCp = _bucket(NC, (4, 8, 16, 32, 64, 128, 256))
    dims = V2Dims(B=Bp, S=S, H=H, D=D, WIN=WINp, IDX=IDXp, BLOCK=BLOCK, M=Mp, NO=NOp,
                  NC=NCp, KT=KT, ratio=inputs.compress_ratio)
    Tp = Bp * S

    def pad(t: torch.Tensor, shape, value=0) -> torch.Tensor:
        out = torch.full(shape, value, dtype=t.dtype)
        out[tuple(slice(0, n) for n in t.shape)] = t
        return out

    arrays = [
        pad(inputs.q, (Tp, H, D)),
        pad(inputs.ori_kv, (NOp, BLOCK, D)).reshape(NOp * BLOCK, D),
        pad(inputs.window_swa_indices, (Tp, WINp), -1),
        pad(inputs.cmp_kv, (NCp, BLOCK, D)).reshape(NCp * BLOCK, D),
        pad(inputs.cmp_block_table, (Bp, Mp)),
        pad(inputs.idx_topk[:, :IDX], (Tp, IDXp), -1),
        pad(inputs.position_ids, (Tp, 1)),
        inputs.attn_sink.to(torch.float32).reshape(1, H, 1).contiguous(),
        torch.full((Tp, H, 1), float(inputs.softmax_scale), dtype=torch.float32),
        torch.zeros(Tp, H, D, dtype=torch.float32),
    ]
    return dims, [a.contiguous() for a in arrays]


def run(bugs: frozenset, kw: dict, timeout_s: float = DEFAULT_TIMEOUT_S,
        verify_passes: bool | None = None) -> torch.Tensor:
    """Validate, pad, run the program with ``bugs`` in the worker, unpad (as
    :func:`kernels.pypto.kernel.run`)."""
    global _last_verify
    inputs = validate(**kw)
    dims, arrays = plan(inputs)
    out, _last_verify = run_program(default_worker(), dims, bugs, arrays, timeout_s,
                                    verify_passes)
    return out[:inputs.T].clone()


def last_verify() -> dict | None:
    """pypto's pass-verification report of this process's last successful v2 call."""
    return _last_verify


def _make(bugs: frozenset, name: str, doc: str):
    def kernel(*, q, ori_kv, window_swa_indices, cmp_kv, cmp_block_table, idx_topk,
               position_ids, attn_sink, softmax_scale, seq_per_batch, index_topk,
               compress_ratio) -> torch.Tensor:
        return run(bugs, dict(q=q, ori_kv=ori_kv, window_swa_indices=window_swa_indices,
                              cmp_kv=cmp_kv, cmp_block_table=cmp_block_table,
                              idx_topk=idx_topk, position_ids=position_ids,
                              attn_sink=attn_sink, softmax_scale=softmax_scale,
                              seq_per_batch=seq_per_batch, index_topk=index_topk,
                              compress_ratio=compress_ratio))

    kernel.__name__ = kernel.__qualname__ = name
    kernel.__doc__ = doc
    kernel.convention = "v2"
    kernel.preconditions = PRECONDITIONS
    kernel.bugs = bugs
    kernel.max_packed_batch = 0
    return kernel


sparse_attn = _make(frozenset(), "sparse_attn",
                    "The pypto kernel for convention v2 (contract sections 8-11); "
                    "returns o [T,H,D] fp32.")

_faulty: dict[str, object] = {}


def faulty(bug: str):
    """The v2 pypto kernel with one seeded bug (a name from
    :data:`kernels.pypto.v2_program.BUGS`; the catalogue calls it ``mutant-pypto-v2-<bug>``)."""
    if bug not in BUGS:
        raise LookupError(f"pypto v2 bug: expected one of {sorted(BUGS)}, got {bug!r}")
    if bug not in _faulty:
        _faulty[bug] = _make(frozenset({bug}), f"mutant_pypto_v2_{bug.replace('-', '_')}",
                             f"Faulty: {BUGS[bug]}.")
    return _faulty[bug]
