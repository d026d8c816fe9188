"""Fails loudly when the pypto 0.2.0 workaround (kernels.pypto_compat) stops applying."""

import inspect

import pytest

from kernels import pypto_compat


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
