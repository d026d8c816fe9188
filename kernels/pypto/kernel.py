"""Public entry point of the pypto sparse decode attention kernel, and its faulty variants.

``sparse_attn(**contract_kwargs)`` validates the call (``contracts.v1.validate``), pads
it to a shape bucket, runs the pypto program (:mod:`kernels.pypto.program`) in the isolated
worker (:mod:`kernels.pypto.runtime`) and returns ``o`` ``[B, S, H, D]`` fp32 on the CPU.

Shape space (small buckets, so that one compiled program serves many examples):

- drawn from declared values: ``H in (2, 3)``, ``D in (16, 24)``, ``WIN in (8, 12)``,
  ``BLOCK in (4, 6)`` (these change the arithmetic or the meaning of index values, so they
  are never padded), ``S in (1, 2)``, ``IDX_TOPK in (4, 8, 16)``, ``B in (1, 2, 3, 4)``; and
  the model's attention shape (:data:`MODEL_SHAPE`) for the properties that ask for it;
- padded, preserving semantics: ``B`` to a power of two with extra batches of
  ``seqused = 0`` (no live entry; their outputs are dropped), up to 16 for calls the suite
  packs from several cases (``max_packed_batch``); ``TOPK`` up to a multiple of the key tile
  (:func:`key_tile`) with ``-1`` entries (ignored); block tables and pools to powers of two
  (extra columns and blocks are never addressed by a live entry). ``softmax_scale`` is a
  runtime tensor, not a compile-time constant.

Verification: by default only the tensor graph is interpreted (its result is the output);
pypto's per-compiler-pass checks are skipped, as they cost time and do not change the output.
:func:`verify_passes` re-runs one call with them and returns the per-pass report (setting
``SPARSE_ATTN_PYPTO_VERIFY_PASSES=1`` turns them on for every call). The report of the last
call is available from :func:`last_verify` (and is attached to
:class:`kernels.pypto.runtime.KernelError`).
"""

from __future__ import annotations

import math

import torch

from sparse_attn_conformance.contracts.v1 import Preconditions, validate
from sparse_attn_conformance.kernels.pypto.program import BUGS, ProgramDims
from sparse_attn_conformance.kernels.pypto.runtime import (
    DEFAULT_TIMEOUT_S,
    KernelError,
    default_worker,
    describe_verify,
    run_program,
)

#: The model's attention shape (contract section 4), taken beside the small buckets; only
#: the properties that ask for it draw it (about 40 s a call in simulation).
MODEL_SHAPE = {"H": 64, "D": 512, "WIN": 128, "BLOCK": 128, "IDX_TOPK": 512, "S": 2}
PRECONDITIONS = Preconditions(
    # Non-powers of two on purpose: tile edges inside D, a window that does not fill whole
    # blocks, a head count that is not a tile multiple.
    dims={"H": (2, 3), "D": (16, 24), "WIN": (8, 12), "BLOCK": (4, 6), "S": (1, 2),
          "IDX_TOPK": (4, 8, 16), "B": (1, 2, 3, 4)},
    # block tables are padded to at most 256 columns
    max_seqused=1024,
    shapes=(MODEL_SHAPE,),
    note=("pypto 0.2.0 runs here through its tensor-graph interpreter, a few tenths of a "
          "second per call: dims are drawn from small buckets (and the model's attention "
          "shape where a property asks for it) and padded. No semantic preconditions."),
)


def key_tile(topk: int) -> int:
    """Entries per online-softmax step: 16 for the small buckets (one or two steps per row,
    so both the single-step and the rescaling paths run), 64 for model-sized rows. The
    graph, and so every simulated call, grows with the step count (measured: 8 instead of
    16 costs 25-40% more per call)."""
    return 16 if topk <= 128 else 64


#: The largest B of a call the suite may pack from several independent calls (a call's
#: fixed cost in simulation is most of its cost; B is padded to 16 here).
MAX_PACKED_BATCH = 16

_last_verify: dict | None = None


def _bucket(n: int, sizes=(1, 2, 4, 8, 16, 32, 64, 128, 256)) -> int:
    for size in sizes:
        if n <= size:
            return size
    return 1 << math.ceil(math.log2(n))


def plan(inputs) -> tuple[ProgramDims, list[torch.Tensor]]:
    """Padded program dims and the kernel's argument tensors (output buffer last)."""
    B, S, H, D = inputs.B, inputs.S, inputs.H, inputs.D
    WIN, BLOCK, TOPK = inputs.window_size, inputs.BLOCK, inputs.TOPK
    Bp = 1 if B == 1 else _bucket(max(B, 2), (2, 4, 8, 16, 32, 64))
    KT = key_tile(TOPK)
    TOPKp = KT * math.ceil(TOPK / KT)
    NW = inputs.ori_block_table.shape[1]
    NWp = _bucket(NW, (2, 4, 8, 16, 32, 64))
    Mp = _bucket(inputs.cmp_block_table.shape[1], (2, 4, 8, 16, 32, 64, 128, 256))
    NOp = _bucket(inputs.ori_kv.shape[0], (4, 8, 16, 32, 64, 128, 256))
    NCp = _bucket(inputs.cmp_kv.shape[0], (4, 8, 16, 32, 64, 128, 256))
    dims = ProgramDims(B=Bp, S=S, H=H, D=D, WIN=WIN, TOPK=TOPKp, BLOCK=BLOCK,
                       NW=NWp, M=Mp, NO=NOp, NC=NCp, KT=KT)

    def pad(t: torch.Tensor, shape, value=0) -> torch.Tensor:
        out = torch.full(shape, value, dtype=t.dtype)
        out[tuple(slice(0, n) for n in t.shape)] = t
        return out

    q = pad(inputs.q, (Bp, S, H, D)).reshape(Bp * S, H, D)
    idx = pad(inputs.topk_idxs, (Bp, S, TOPKp), -1).reshape(Bp * S, TOPKp)
    arrays = [
        q.contiguous(),
        pad(inputs.ori_kv, (NOp, BLOCK, D)).reshape(NOp * BLOCK, D),
        pad(inputs.ori_block_table, (Bp, NWp)),
        pad(inputs.cmp_kv, (NCp, BLOCK, D)).reshape(NCp * BLOCK, D),
        pad(inputs.cmp_block_table, (Bp, Mp)),
        idx.contiguous(),
        inputs.attn_sink.to(torch.float32).reshape(1, H, 1).contiguous(),
        pad(inputs.seqused_kv, (Bp,)),  # padded batches: seqused 0, nothing live
        torch.full((Bp * S, H, 1), float(inputs.softmax_scale), dtype=torch.float32),
        torch.zeros(Bp * S, H, D, dtype=torch.float32),
    ]
    return dims, arrays


def run(bugs: frozenset, kw: dict, timeout_s: float = DEFAULT_TIMEOUT_S,
        verify_passes: bool | None = None) -> torch.Tensor:
    """Validate, pad, run the program with ``bugs`` in the worker, unpad.

    ``verify_passes``: also have pypto verify every compiler pass (default: from
    ``$SPARSE_ATTN_PYPTO_VERIFY_PASSES``, else off; see `pypto_runtime.run_program`)."""
    global _last_verify
    inputs = validate(**kw)
    dims, arrays = plan(inputs)
    out, _last_verify = run_program(default_worker(), dims, bugs, arrays, timeout_s,
                                    verify_passes)
    B, S = inputs.B, inputs.S
    return out.reshape(dims.B, S, inputs.H, inputs.D)[:B].clone()


def last_verify() -> dict | None:
    """pypto's pass-verification report of this process's last successful call.

    Keys: ``produced`` (bool: pypto wrote any verification result), ``first_divergent_pass``
    (name or None), ``divergent_passes``, ``passed`` and ``lines`` (raw log lines).
    """
    return _last_verify


def verify_passes(kernel=None, **kw) -> dict | None:
    """Re-run one call of ``kernel`` (default :data:`sparse_attn`) with pypto's per-pass
    verification on; return its report (see :func:`last_verify`). For failure messages:
    a few seconds per call. A divergent pass is reported here, not raised."""
    try:
        run((kernel or sparse_attn).bugs, kw, verify_passes=True)
    except KernelError as exc:
        if exc.verify is None:
            raise
        return exc.verify
    return _last_verify


def _make(bugs: frozenset, name: str, doc: str, passes: bool | None = None):
    def kernel(*, q, ori_kv, ori_block_table, cmp_kv, cmp_block_table, topk_idxs, attn_sink,
               seqused_kv, softmax_scale, window_size) -> torch.Tensor:
        return run(bugs, dict(q=q, ori_kv=ori_kv, ori_block_table=ori_block_table,
                              cmp_kv=cmp_kv, cmp_block_table=cmp_block_table,
                              topk_idxs=topk_idxs, attn_sink=attn_sink, seqused_kv=seqused_kv,
                              softmax_scale=softmax_scale, window_size=window_size),
                   verify_passes=passes)

    kernel.__name__ = kernel.__qualname__ = name
    kernel.__doc__ = doc
    kernel.preconditions = PRECONDITIONS
    kernel.bugs = bugs
    kernel.max_packed_batch = MAX_PACKED_BATCH
    kernel.diagnose = lambda **kw: describe_verify(verify_passes(kernel, **kw))
    return kernel


sparse_attn = _make(frozenset(), "sparse_attn",
                    "The pypto kernel (contract sections 1-3); returns o [B,S,H,D] fp32.")

#: The same kernel with pypto's per-pass verification on every call (catalogue name
#: ``pypto-passes``): in simulation each lowered stage is compared with the tensor graph
#: and a divergence fails the call. Seconds a call; the nightly job runs one property on it.
sparse_attn_verified_passes = _make(
    frozenset(), "sparse_attn_verified_passes",
    "The pypto kernel, every compiler pass verified against the tensor graph.", passes=True)

_faulty: dict[str, object] = {}


def faulty(bug: str):
    """The pypto kernel with one seeded bug (a name from :data:`kernels.pypto.program.BUGS`;
    the catalogue calls it ``mutant-pypto-<bug>``)."""
    if bug not in BUGS:
        raise LookupError(f"pypto bug: expected one of {sorted(BUGS)}, got {bug!r}")
    if bug not in _faulty:
        _faulty[bug] = _make(frozenset({bug}), f"mutant_pypto_{bug.replace('-', '_')}",
                             f"Faulty: {BUGS[bug]}.")
    return _faulty[bug]
