"""The `triton` kernel: the contract (sections 1-3) as a Triton program
(`kernels/triton/program.py`), natively on a CUDA GPU and on the CPU through Triton's
interpreter; its seeded faulty versions (`mutant-triton-<bug>`) are the same program with
one bug each, chosen by a compile-time constant in the Triton code.

Where it runs: on a CUDA GPU when torch sees one and `TRITON_INTERPRET` is not set;
otherwise on the CPU through the interpreter, with the interpreter's bf16 `tl.dot` and bf16
casts made to compute as a GPU does (`kernels.triton.interpret`, applied only around this
kernel's launches).

The interpreter is chosen when triton is imported: `triton.language`'s own functions
(`tl.max`, `tl.sum`, ...) are decorated then, as interpreted functions only if
`TRITON_INTERPRET=1` is set at that moment. So on the CPU this module imports triton with
`TRITON_INTERPRET=1` set for the import alone (and sets it again around each launch, where
triton reads it too); the process environment is as it was outside those calls. When
something imported triton earlier without it, the interpreter cannot run the kernel, and
`available()` says so (set `TRITON_INTERPRET=1` in the environment before the run).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys

import torch

from sparse_attn_conformance.contracts.v1 import Inputs, validate

#: The optional extra that installs triton (pyproject.toml).
PACKAGE = "triton==3.9.0"
#: Key tile: entries per online-softmax step (tl.dot needs every dimension >= 16 on a GPU).
BLOCK_T = 16
#: Through the interpreter: at most this many (token, head) rows, and this many tokens, a program.
INTERPRETER_ROWS, INTERPRETER_TOKENS = 512, 64
#: The share of each profile's examples a run through the interpreter makes (`example_fraction`).
INTERPRETER_EXAMPLE_FRACTION = 0.1


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def on_gpu() -> bool:
    """Whether the kernel runs natively: a CUDA GPU torch sees, and no `TRITON_INTERPRET`."""
    return torch.cuda.is_available() and not _truthy(os.environ.get("TRITON_INTERPRET"))


@contextlib.contextmanager
def _interpret_env():
    """`TRITON_INTERPRET=1` for the duration of the block only."""
    before = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = before


def _stdlib_interpreted() -> bool:
    from triton import language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.standard.max, InterpretedFunction)


def _import_triton(interpret: bool) -> str | None:
    """Import triton as the kernel needs it; None, or why it cannot run."""
    if importlib.util.find_spec("triton") is None:
        return f"triton is not installed (pip install 'sparse-attn-conformance[triton]', i.e. {PACKAGE})"
    if interpret and "triton" not in sys.modules:
        with _interpret_env():
            import triton.language  # noqa: F401  (decorates tl's functions for the interpreter)
    if interpret and not _stdlib_interpreted():
        return ("triton was imported before this kernel without TRITON_INTERPRET=1, so its "
                "interpreter cannot run on this CPU-only machine: set TRITON_INTERPRET=1 in the "
                "environment of the run")
    return None


class TritonKernel:
    """The Triton kernel of the contract; `bug` names one seeded bug of
    `kernels.triton.program.BUGS` (None: the correct kernel)."""

    def __init__(self, bug: str | None = None):
        self.bug = bug
        self._programs: dict[bool, object] = {}

    def __repr__(self) -> str:
        return f"TritonKernel(bug={self.bug!r})"

    @property
    def example_fraction(self) -> float:
        """All of a profile's examples on a GPU; through the interpreter (0.1-0.3 s a call,
        about 1 example a second on this project's shared 2-core machine) a tenth, at least 3."""
        return 1.0 if on_gpu() else INTERPRETER_EXAMPLE_FRACTION

    def available(self) -> str | None:
        return _import_triton(interpret=not on_gpu())

    def _program(self, gpu: bool):
        """The Triton program, compiled for the GPU (`triton.jit`) or interpreted."""
        if gpu not in self._programs:
            reason = _import_triton(interpret=not gpu)
            if reason is not None:
                raise RuntimeError(f"triton kernel: {reason}")
            if gpu:
                import triton

                from sparse_attn_conformance.kernels.triton import program as triton_program
                self._programs[gpu] = triton.jit(triton_program.sparse_attn_program)
            else:
                from triton.runtime.interpreter import InterpretedFunction

                from sparse_attn_conformance.kernels.triton import (
                    interpret as triton_interpret,
                )
                from sparse_attn_conformance.kernels.triton import (
                    program as triton_program,
                )
                triton_interpret.install()
                self._programs[gpu] = InterpretedFunction(triton_program.sparse_attn_program)
        return self._programs[gpu]

    def __call__(self, **kw) -> torch.Tensor:
        return self.run(validate(**kw))

    def run(self, inputs: Inputs) -> torch.Tensor:
        gpu = on_gpu()
        program = self._program(gpu)
        from sparse_attn_conformance.kernels.triton.program import BUGS

        bug = 0 if self.bug is None else BUGS[self.bug][0]
        dev = "cuda" if gpu else "cpu"
        q, ori, cmp = (t.to(dev) for t in (inputs.q, inputs.ori_kv, inputs.cmp_kv))
        ori_bt, cmp_bt, idx = (t.to(dev) for t in (inputs.ori_block_table, inputs.cmp_block_table,
                                                   inputs.topk_idxs))
        sink, seqused = inputs.attn_sink.to(dev), inputs.seqused_kv.to(dev)
        B, S, H, D = inputs.B, inputs.S, inputs.H, inputs.D
        o = torch.empty((B, S, H, D), dtype=torch.bfloat16, device=dev)
        block_s, block_h, block_t = launch_blocks(B * S, H, gpu)
        block_d = max(16, triton_next_pow2(D))
        grid = (-(-(B * S) // block_s), -(-H // block_h))
        args = (q, ori, ori_bt, cmp, cmp_bt, idx, sink, seqused, o,
                float(inputs.softmax_scale), B * S, S, H, D, inputs.window_size, inputs.TOPK, inputs.BLOCK,
                *q.stride(), *ori.stride(), *ori_bt.stride(), *cmp.stride(), *cmp_bt.stride(),
                *idx.stride(), *sink.stride(), *seqused.stride())
        consts = dict(BLOCK_S=block_s, BLOCK_H=block_h, BLOCK_D=block_d, BLOCK_T=block_t, BUG=bug)
        if gpu:
            program[grid](*args, **consts)
        else:
            from sparse_attn_conformance.kernels.triton import interpret as triton_interpret

            with _interpret_env(), triton_interpret.faithful():
                program[grid](*args, **consts)
        return o.cpu()


def launch_blocks(tokens: int, H: int, gpu: bool) -> tuple[int, int, int]:
    """`(BLOCK_S, BLOCK_H, BLOCK_T)`: tokens, heads and key entries of one program.

    GPU: one token and 16 heads a program, 16-entry key tiles (tl.dot's smallest shape).
    Interpreter: its cost is Python's, per executed Triton operation and program, nearly
    independent of the tiles' sizes; so every head (up to `INTERPRETER_ROWS`) and as many
    tokens as keep a program within `INTERPRETER_ROWS` (token, head) rows and
    `INTERPRETER_TOKENS` tokens (numpy's work per operation grows with them)."""
    if gpu:
        return 1, 16, BLOCK_T
    block_h = min(triton_next_pow2(H), INTERPRETER_ROWS)
    block_s = max(1, min(INTERPRETER_ROWS // block_h, INTERPRETER_TOKENS, triton_next_pow2(tokens)))
    return block_s, block_h, BLOCK_T


def triton_next_pow2(n: int) -> int:
    """The smallest power of two >= n (Triton's block shapes are powers of two)."""
    return 1 << max(0, (int(n) - 1).bit_length())


#: The correct kernel (catalogue name `triton`).
sparse_attn = TritonKernel()

_faulty: dict[str, TritonKernel] = {}


def faulty(bug: str) -> TritonKernel:
    """The Triton kernel with one seeded bug (a name from `kernels.triton.program.BUGS`,
    which needs triton; `BUG_NAMES` here lists the same names without importing it)."""
    if bug not in BUG_NAMES:
        raise LookupError(f"triton bug: expected one of {sorted(BUG_NAMES)}, got {bug!r}")
    if bug not in _faulty:
        _faulty[bug] = TritonKernel(bug)
    return _faulty[bug]


#: The seeded bugs' names, readable without triton installed (the catalogue lists them on
#: every machine; tests/test_triton_kernel.py checks they match `triton_program.BUGS`).
BUG_NAMES = ("missing-plus-one", "sink-dropped", "unguarded-rescale", "unshifted-exp")
