"""Workarounds for pypto 0.2.0 in simulation: a bug that makes pass verification compute on
zeros, and a performance model that costs most of a simulated call and gives no numbers.

Bug: ``pypto.frontend.parser.entry.JitCallableWrapper._setup_verify_data`` copies every
argument into a freshly allocated ``torch.zeros`` host buffer with ``pypto_impl.CopyToHost``
before registering it as verification input. For CPU tensors that copy does not move the
data, so the interpreter that pass verification runs ("the calculator") sees all-zero inputs
and the results written back into the caller's tensors are wrong.

Fix: when every argument already lives on the CPU, register the caller's own buffers with
``pypto_impl.SetVerifyData`` (no copy). Device tensors keep the original behaviour.

Performance model: in simulation ``JitCallableWrapper._run_with_cpu`` calls
``CostModelRunOnceDataFromHost``, which runs the program's control flow with the interpreter
(this writes the output) and then a cycle-level performance simulation of every task and its
report ("RunDynCostModel", about 60% of a call, measured). That simulation is skipped when
the runtime option ``run_mode`` is not SIM, and nothing else in the call reads the option
after compilation, so :func:`_run_with_cpu_without_perf_model` sets it to NPU for the
duration of that one call: the interpreter still runs and writes the same output. The
timings the performance model would have printed are lost, which this suite never reads.

The patches are pinned to pypto 0.2.0: on any other version :func:`apply` raises, naming the
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
            f"kernels.pypto.compat patches pypto {PINNED_VERSION} only, found pypto {found}: "
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
_ORIGINAL_RUN_WITH_CPU = None


def _run_with_cpu_without_perf_model(self, in_tensors, out_tensors) -> None:
    """Replacement for ``JitCallableWrapper._run_with_cpu``: the interpreter, not the
    performance model (see the module docstring)."""
    import pypto

    pypto.set_options(runtime_options={"run_mode": pypto.RunMode.NPU.value})
    try:
        _ORIGINAL_RUN_WITH_CPU(self, in_tensors, out_tensors)
    finally:
        pypto.set_options(runtime_options={"run_mode": pypto.RunMode.SIM.value})


def apply() -> None:
    """Install the workarounds (idempotent). Raises on a pypto other than 0.2.0."""
    global _applied, _ORIGINAL, _ORIGINAL_RUN_WITH_CPU
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
    if "_run_with_cpu" not in wrapper.__dict__:
        raise PyptoCompatError(
            "pypto 0.2.0 JitCallableWrapper has no _run_with_cpu: re-check how a simulated "
            "call runs the interpreter and the performance model")
    _ORIGINAL = wrapper.__dict__["_setup_verify_data"].__func__
    wrapper._setup_verify_data = staticmethod(_setup_verify_data_fixed)
    _ORIGINAL_RUN_WITH_CPU = wrapper.__dict__["_run_with_cpu"]
    wrapper._run_with_cpu = _run_with_cpu_without_perf_model
    _applied = True


def is_applied() -> bool:
    """True once :func:`apply` has patched pypto in this process."""
    return _applied
