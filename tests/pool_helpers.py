"""Running the suite in a pytest subprocess for the pool's tests (tests/test_npu_pool.py,
test_sharding.py, test_example_db.py, test_known_failures.py): the suite's directory by
absolute path, so that a run may start in a scratch folder (its own `.hypothesis/`)."""

import os
import subprocess
import sys
from pathlib import Path

from sparse_attn_conformance import conformance

SUITE = Path(conformance.__file__).resolve().parent
ROOT = SUITE.parent


def run_pytest(*args, cwd=None, env=None, extra_path=None):
    """`python -m pytest ARGS` (the pool's variables of this process are not passed on)."""
    env = dict(os.environ if env is None else env)
    for k in [k for k in env if k.startswith(("SPARSE_ATTN_NPU", "PYTEST_XDIST"))]:
        del env[k]
    env.pop("ASCEND_RT_VISIBLE_DEVICES", None)
    path = [str(ROOT)] + ([str(extra_path)] if extra_path else [])
    env["PYTHONPATH"] = os.pathsep.join(path + [env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=600)
