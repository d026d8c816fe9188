"""Workaround for a pypto 0.2.0 bug that makes pass verification compute on zeros.

Bug: ``pypto.frontend.parser.entry.JitCallableWrapper._setup_verify_data`` copies every
argument into a freshly allocated ``torch.zeros`` host buffer with ``pypto_impl.CopyToHost``
before registering it as verification input. For CPU tensors that copy does not move the
data, so the interpreter that pass verification runs ("the calculator") sees all-zero inputs
and the results written back into the caller's tensors are wrong.

Fix: when every argument already lives on the CPU, register the caller's own buffers with
``pypto_impl.SetVerifyData`` (no copy). Device tensors keep the original behaviour.

The patch is pinned to pypto 0.2.0: on any other version :func:`apply` raises, naming the
version found, so that an upgrade forces someone to re-check whether the bug still exists.
"""

from __future__ import annotations

from importlib import metadata

PINNED_VERSION = "0.2.0"

_applied = False


class PyptoCompatError(RuntimeError):
    """The installed pypto is not the version this workaround was written for."""


def installed_version() -> str:
    """Return the installed pypto distribution version."""
    return metadata.version("pypto")


def check_version() -> None:
    """Raise :class:`PyptoCompatError` unless pypto is exactly :data:`PINNED_VERSION`."""
    found = installed_version()
    if found != PINNED_VERSION:
        raise PyptoCompatError(
            f"kernels.pypto_compat patches pypto {PINNED_VERSION} only, found pypto {found}: "
            "re-check whether JitCallableWrapper._setup_verify_data still hands the "
            "interpreter zero-filled copies of CPU inputs, then update or drop the patch"
        )


def _setup_verify_data_fixed(pto_tensors) -> None:
    """Replacement for ``JitCallableWrapper._setup_verify_data`` (a staticmethod)."""
    import pypto
    import torch
    from pypto import pypto_impl
    from pypto._utils import BuildOnlineManager
    from pypto.frontend.parser import entry
    from pypto.runtime import _pto_verify_datas

    if not pypto.get_verify_options().get("enable_pass_verify"):
        return
    if any(t.device is not None and t.device != torch.device("cpu") for t in pto_tensors):
        # Device tensors: the original copy-to-host path is correct there.
        return _ORIGINAL(pto_tensors)
    BuildOnlineManager().build_and_load_calculator()
    # The CPU tensors are already host memory: hand them to the interpreter directly.
    pypto_impl.SetVerifyData(
        entry._pto_to_tensor_data(pto_tensors), [], _pto_verify_datas.get_data()
    )


_ORIGINAL = None


def apply() -> None:
    """Install the workaround (idempotent). Raises on a pypto other than 0.2.0."""
    global _applied, _ORIGINAL
    check_version()
    if _applied:
        return
    from pypto.frontend.parser import entry

    wrapper = entry.JitCallableWrapper
    if "_setup_verify_data" not in wrapper.__dict__:
        raise PyptoCompatError(
            "pypto 0.2.0 JitCallableWrapper has no _setup_verify_data: the workaround's target "
            "is gone, re-check the bug"
        )
    _ORIGINAL = wrapper.__dict__["_setup_verify_data"].__func__
    wrapper._setup_verify_data = staticmethod(_setup_verify_data_fixed)
    _applied = True


def is_applied() -> bool:
    """True once :func:`apply` has patched pypto in this process."""
    return _applied
