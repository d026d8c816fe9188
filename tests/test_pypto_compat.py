"""Fails loudly when the pypto 0.2.0 workaround (kernels.pypto.compat) stops applying."""

import inspect

import pytest

from sparse_attn_conformance.kernels.pypto import compat as pypto_compat


def test_installed_pypto_is_the_pinned_version():
    assert pypto_compat.installed_version() == pypto_compat.PINNED_VERSION, (
        f"pypto {pypto_compat.installed_version()} installed, the workaround is for "
        f"{pypto_compat.PINNED_VERSION}: re-check the _setup_verify_data bug")


def test_patched_method_still_exists_and_still_has_the_bug():
    from pypto.converter import _gen_pto_tensor
    from pypto.frontend.parser import entry

    original = pypto_compat._ORIGINAL or entry.JitCallableWrapper.__dict__[
        "_setup_verify_data"].__func__
    src = inspect.getsource(original)
    # The bug: inputs are copied into fresh zero buffers before SetVerifyData.
    assert "_gen_pto_tensor" in src and "CopyToHost" in src and "SetVerifyData" in src, (
        "JitCallableWrapper._setup_verify_data changed: re-check the bug, update the patch")
    assert "torch.zeros" in inspect.getsource(_gen_pto_tensor)


def test_apply_patches_and_is_idempotent():
    from pypto.frontend.parser import entry

    pypto_compat.apply()
    pypto_compat.apply()
    assert pypto_compat.is_applied()
    assert (entry.JitCallableWrapper.__dict__["_setup_verify_data"].__func__
            is pypto_compat._setup_verify_data_fixed)


def test_other_version_is_refused(monkeypatch):
    monkeypatch.setattr(pypto_compat, "installed_version", lambda: "0.3.0")
    with pytest.raises(pypto_compat.PyptoCompatError, match="found pypto 0.3.0"):
        pypto_compat.check_version()


def test_perf_model_patch_target_still_runs_the_cost_model():
    """The second workaround skips pypto's performance model by making the runtime option
    `run_mode` read NPU during `_run_with_cpu`; it relies on that method calling the cost
    model entry point, which checks the option."""
    from pypto.frontend.parser import entry

    original = pypto_compat._ORIGINAL_RUN_WITH_CPU or entry.JitCallableWrapper.__dict__[
        "_run_with_cpu"]
    assert "_cost_model_run_once_data_from_host" in inspect.getsource(original), (
        "JitCallableWrapper._run_with_cpu changed: re-check the performance-model workaround")


def test_patched_call_gives_the_numbers_without_the_perf_model(tmp_path):
    """In a fresh process: the patched simulated call writes the right output and pypto's
    performance model writes no report (its output folder `CostModelSimulationOutput`)."""
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import os, sys, torch\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})\n"
        "from sparse_attn_conformance.kernels.pypto import compat as pypto_compat; pypto_compat.apply()\n"
        "from sparse_attn_conformance.kernels.pypto.calculator import ensure_calculator; ensure_calculator()\n"
        "import pypto\n"
        "@pypto.frontend.jit(verify_options={'enable_pass_verify': True,\n"
        "                                    'pass_verify_pass_filter': ['no_verify']})\n"
        "def k(a: pypto.Tensor((8, 16), pypto.DT_FP32), o: pypto.Tensor((8, 16), pypto.DT_FP32)):\n"
        "    pypto.set_vec_tile_shapes(8, 16)\n"
        "    o[:] = pypto.exp(a) * 2.0\n"
        "a = torch.randn(8, 16); o = torch.zeros(8, 16)\n"
        "k(a, o)\n"
        "torch.testing.assert_close(o, torch.exp(a) * 2.0)\n"
        "print('OK', sorted({p.name for p in __import__('pathlib').Path('output').glob('*/*')}))\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "ASCEND_HOME_PATH"}
    env["ASCEND_PROCESS_LOG_PATH"] = str(tmp_path / "log")
    (tmp_path / "tiny_kernel.py").write_text(script)  # pypto reads the kernel's source
    res = subprocess.run([sys.executable, "tiny_kernel.py"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert "OK" in res.stdout, res.stdout[-2000:] + res.stderr[-3000:]
    assert "CostModelSimulationOutput" not in res.stdout, res.stdout
