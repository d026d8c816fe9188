"""Build pypto's pass-verification interpreter ("the calculator") once per machine.

pypto 0.2.0 compiles ``lib/calculator`` with cmake/g++ into a temporary directory on the
first pass-verified call of every process (~30 s) and throws the result away. Here the
library is built once into a cache directory outside the checkout, keyed by pypto and torch
versions, under an exclusive file lock (safe when several ``pytest -n`` workers start at
once), then loaded with ``RTLD_GLOBAL`` and pypto's build manager is told it is loaded.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

CACHE_ROOT_ENV = "SPARSE_ATTN_CACHE_DIR"


def cache_root() -> Path:
    """The per-machine cache directory (``$SPARSE_ATTN_CACHE_DIR`` overrides)."""
    env = os.environ.get(CACHE_ROOT_ENV)
    if env:
        return Path(env)
    return Path.home() / ".cache" / "sparse-attn-conformance"


def _calculator_dir() -> Path:
    from importlib import metadata

    import torch

    key = f"pypto-{metadata.version('pypto')}-torch-{torch.__version__}"
    return cache_root() / "calculator" / key


def ensure_calculator() -> Path:
    """Build (once) and load the calculator library; return its path."""
    from pypto._utils import BuildOnlineManager

    mgr = BuildOnlineManager()
    target_dir = _calculator_dir()
    lib = target_dir / "lib" / "libtile_fwk_calculator.so"
    if not lib.exists():
        target_dir.parent.mkdir(parents=True, exist_ok=True)
        lock_path = target_dir.parent / (target_dir.name + ".lock")
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per machine; others wait
            if not lib.exists():
                _build_into(mgr, target_dir)
    if not mgr.calculator_loaded:
        ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
        mgr.calculator_loaded = True  # stop pypto rebuilding it in a temp dir
    return lib


def _build_into(mgr, target_dir: Path) -> None:
    """Run pypto's own cmake recipe, then move the install tree into place atomically."""
    torch_ctx = mgr._TorchContext()
    cmake_ctx = mgr._CMakeContext()
    with tempfile.TemporaryDirectory(dir=target_dir.parent) as tmp:
        ctx = mgr._CMakeContext.CompileContext(
            src_dir=Path(mgr.pkg_lib_dir, "calculator"), tmp_dir=Path(tmp)
        )
        ctx.cfg_cmd_ext = (
            f"-DPY3_MOD_TORCH_VERSION={torch_ctx.torch_version}"
            f" -DPY3_MOD_TORCH_ROOT_PATH={torch_ctx.torch_root_dir}"
            f" -DPY3_MOD_TORCH_C_GLIBCXX_USE_CXX11_ABI={torch_ctx.torch_c_use_cxx11_abi}"
        )
        install = cmake_ctx.compile(ctx=ctx)
        if not (install / "lib" / "libtile_fwk_calculator.so").exists():
            raise RuntimeError(f"pypto calculator build produced no library under {install}")
        if target_dir.exists():
            shutil.rmtree(target_dir)
        os.replace(install, target_dir)
