"""The interpreter fix (kernels/triton/interpret.py), both ways: without it, triton's CPU
interpreter computes a bf16 `tl.dot` on raw bit patterns and truncates fp32 -> bf16 casts;
with it, both come out as on a GPU. Each test fails loudly when the fix stops applying
(another triton, methods renamed) or is no longer needed (the interpreter got it right).

The probes run in a subprocess with `TRITON_INTERPRET=1` set before triton is imported, as a
user runs their own kernel on a laptop (and so this test process' triton stays untouched).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

triton = pytest.importorskip("triton")

from sparse_attn_conformance.kernels.triton import interpret as triton_interpret  # noqa: E402

PROBE = textwrap.dedent("""
    import json, sys
    import torch
    import triton
    import triton.language as tl
    from sparse_attn_conformance.kernels.triton import interpret as triton_interpret

    @triton.jit
    def probe(a_ptr, b_ptr, dot_ptr, x_ptr, cast_ptr, store_ptr):
        r = tl.arange(0, 16)
        tile = r[:, None] * 16 + r[None, :]
        a = tl.load(a_ptr + tile)
        b = tl.load(b_ptr + tile)
        tl.store(dot_ptr + tile, tl.dot(a, b))
        x = tl.load(x_ptr + r)
        tl.store(cast_ptr + r, x.to(tl.bfloat16).to(tl.float32))
        tl.store(store_ptr + r, x)  # fp32 into a bf16 buffer: the store casts

    def run():
        a = torch.ones(16, 16, dtype=torch.bfloat16)
        b = torch.full((16, 16), 2.0, dtype=torch.bfloat16)
        dot = torch.zeros(16, 16)
        # 1 + 3 * 2**-9 lies past the middle between bf16 neighbours 1 and 1 + 2**-7
        x = torch.full((16,), 1.0 + 3 * 2**-9)
        cast = torch.zeros(16)
        store = torch.zeros(16, dtype=torch.bfloat16)
        probe[(1,)](a, b, dot, x, cast, store)
        return dict(dot=dot[0, 0].item(), cast=cast[0].item(), store=store[0].float().item())

    out = {"without": run()}
    if sys.argv[1] == "fixed":
        triton_interpret.install()
        with triton_interpret.faithful():
            out["with"] = run()
        out["after"] = run()  # outside faithful(): the interpreter's own code again
    print(json.dumps(out))
""")

#: what a GPU gives: 16 products 1 * 2, summed; 1 + 3 * 2**-9 rounded to nearest even
GPU = dict(dot=32.0, cast=1.0078125, store=1.0078125)
#: triton 3.9.0's interpreter: 16 * 0x3F80 * 0x4000 (the bit patterns of 1.0 and 2.0 as
#: integers), and the mantissa truncated to 1.0
INTERPRETER = dict(dot=16.0 * 0x3F80 * 0x4000, cast=1.0, store=1.0)


def run_probe(mode: str) -> dict:
    env = {"TRITON_INTERPRET": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                          env=env, timeout=300, cwd=str(__import__("pathlib").Path(__file__).parents[1]))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_version_is_one_the_fix_was_checked_on():
    assert triton.__version__ in triton_interpret.CHECKED, (
        f"triton {triton.__version__} is not among {triton_interpret.CHECKED}: rerun this file's "
        f"probes against it and add it to kernels/triton/interpret.py CHECKED")


@pytest.fixture(scope="module")
def probed():
    return run_probe("fixed")


def test_without_the_fix_the_interpreter_is_wrong_as_named(probed):
    # if this fails with GPU numbers, the interpreter is fixed upstream: the fix is no longer needed
    assert probed["without"] == INTERPRETER, (
        f"triton {triton.__version__}'s interpreter now gives {probed['without']} (a GPU: {GPU}); "
        f"if that equals the GPU's, kernels/triton/interpret.py is no longer needed")


def test_with_the_fix_bf16_dot_and_casts_are_a_gpus(probed):
    assert probed["with"] == GPU


def test_the_fix_applies_only_inside_faithful(probed):
    assert probed["after"] == INTERPRETER


def test_install_is_idempotent_and_refuses_unchecked_versions(monkeypatch):
    triton_interpret.install()
    from triton.runtime import interpreter

    dot = interpreter.InterpreterBuilder.create_dot
    triton_interpret.install()
    assert interpreter.InterpreterBuilder.create_dot is dot and triton_interpret.is_installed()
    monkeypatch.setattr(triton, "__version__", "99.0.0")
    with pytest.raises(triton_interpret.InterpreterFixError, match="99.0.0.*checked only on"):
        triton_interpret.install()


@pytest.mark.parametrize("value, rne, rtz", [
    (1.0 + 3 * 2**-9, 0x3F81, 0x3F80),   # above the half: up
    (1.0 + 2**-8, 0x3F80, 0x3F80),       # exactly half, even below: stays
    (1.0 + 3 * 2**-8, 0x3F82, 0x3F81),   # exactly half, odd below: to even (up)
    (3.4028235e38, 0x7F80, 0x7F7F),      # fp32 max, past bf16's largest finite: inf (as torch)
    (-0.0, 0x8000, 0x8000),
])
def test_rounding_matches_torch(value, rne, rtz):
    import torch

    x = np.array([value], dtype=np.float32)
    assert int(triton_interpret.f32_to_bf16_bits(x)[0]) == rne
    assert int(torch.tensor(x).bfloat16().view(torch.int16).item()) & 0xFFFF == rne
    assert int(triton_interpret.f32_to_bf16_bits(x, "rtz")[0]) == rtz


def test_nan_stays_nan_and_bad_rounding_is_named():
    bits = triton_interpret.f32_to_bf16_bits(np.array([np.nan], dtype=np.float32))
    assert np.isnan(triton_interpret.bf16_bits_to_f32(bits))[0]
    with pytest.raises(ValueError, match="rounding"):
        triton_interpret.f32_to_bf16_bits(np.zeros(1, np.float32), "up")
