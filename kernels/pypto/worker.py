"""Worker process that runs pypto kernel calls
(``python -m sparse_attn_conformance.kernels.pypto.worker FD WORKDIR``).

Receives pickled requests and sends pickled responses over the
:class:`multiprocessing.connection.Connection` whose file descriptor is given on the command
line (:mod:`kernels.pypto.runtime` holds the other end); its own stdout/stderr go to a log
file, because pypto prints freely there.
The worker runs in a private temp dir (pypto writes ``./output/...``) with pypto's logs
redirected under it, keeps compiled programs cached by shape, and loads the calculator
from the per-machine cache. A crash kills only this process; the client sees it.

Requests: ``("run", dims, bugs, arrays, verify_passes)``, ``("ping",)``, test hooks ``("kill", signum)`` and
``("sleep", seconds)``. Responses: ``("ok", value, report)`` or ``("error", text, report)``.
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
import shutil
import sys
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

from sparse_attn_conformance.kernels.pypto import pool as pypto_pool

MODE_ENV = "SPARSE_ATTN_PYPTO_MODE"  # sim | npu; default: npu iff CANN and a device


def run_mode() -> str:
    """Pick pypto's run mode: env override, else NPU when CANN and a device are present."""
    mode = os.environ.get(MODE_ENV, "").strip().lower()
    if mode:
        if mode not in ("sim", "npu"):
            raise ValueError(f"{MODE_ENV}: expected 'sim' or 'npu', got {mode!r}")
        return mode
    if os.environ.get("ASCEND_HOME_PATH") and Path("/dev/davinci0").exists():
        return "npu"
    return "sim"


class VerifyLog:
    """Reads pypto's pass-verification results from its plog files.

    pypto 0.2.0 writes one INFO line per verified pass (``... Pass_NN_Name Verify ... result
    PASS``) and on divergence an ERROR line ``VerifyPass failed for function F, pass P
    (passIndex: N, ...)`` into ``$ASCEND_PROCESS_LOG_PATH/debug/plog/pypto-log-*.log``.
    """

    FAIL = re.compile(r"VerifyPass failed for function (\S+), pass (\w+) \(passIndex: (\d+)")
    PASS = re.compile(r"Pass_(\d+)_(\w+) Verify .* result (\w+)")

    def __init__(self, root: Path):
        self.root = root
        self.offsets: dict[Path, int] = {}

    def new_lines(self) -> list[str]:
        """Lines appended since the previous call."""
        lines: list[str] = []
        for path in sorted(self.root.glob("**/plog/*.log")):
            start = self.offsets.get(path, 0)
            with open(path, "rb") as fh:
                fh.seek(start)
                data = fh.read()
            self.offsets[path] = start + len(data)
            lines += [ln for ln in data.decode("utf-8", "replace").splitlines() if "VERIFY" in ln]
        return lines

    def report(self) -> dict:
        """Summary of the verification lines of the last call."""
        lines = self.new_lines()
        fails = [self.FAIL.search(ln) for ln in lines]
        fails = [f for f in fails if f]
        passes = [p.group(2) for p in map(self.PASS.search, lines) if p and p.group(3) == "PASS"]
        first = min(fails, key=lambda f: int(f.group(3)), default=None)
        return {
            "first_divergent_pass": first.group(2) if first else None,
            "divergent_passes": sorted({f.group(2) for f in fails}),
            "passed": passes,
            "produced": bool(lines),
            "lines": lines[-40:],
        }


class Worker:
    """State of one worker process: the compiled-program cache and the verify log."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        os.chdir(self.workdir)  # pypto writes ./output/... here, never in the checkout
        os.environ["ASCEND_PROCESS_LOG_PATH"] = str(self.workdir / "ascend_log")
        self.mode = run_mode()
        pypto_pool.settle(self.workdir, self.mode)  # own output dir; in an NPU pool, one card
        if self.mode == "sim":
            os.environ.pop("ASCEND_HOME_PATH", None)  # pypto picks NPU mode when it is set
        from sparse_attn_conformance.kernels.pypto import toolchain as pypto_toolchain

        if pypto_toolchain.enabled() and pypto_toolchain.install(self.workdir / "bin"):
            os.environ["PATH"] = str(self.workdir / "bin") + os.pathsep + os.environ["PATH"]
        from sparse_attn_conformance.kernels.pypto import compat as pypto_compat

        pypto_compat.apply()
        self.programs: dict = {}
        self.verify_log = VerifyLog(self.workdir / "ascend_log")
        self.calculator_ready = False

    def program(self, dims, bugs, verify_passes=False):
        """Compiled program for ``dims``/``bugs`` (built once per worker)."""
        key = (dims, frozenset(bugs), verify_passes)
        if key not in self.programs:
            # the module that defines the dims' class builds the program (kernels.pypto.program
            # for the v1 kernel, kernels.pypto.v2_program for the v2 one)
            build_program = importlib.import_module(type(dims).__module__).build_program
            if self.mode == "sim" and not self.calculator_ready:
                from sparse_attn_conformance.kernels.pypto.calculator import ensure_calculator

                ensure_calculator()
                self.calculator_ready = True
            self.programs[key] = build_program(dims, frozenset(bugs), mode=self.mode,
                                               verify_passes=verify_passes)
        return self.programs[key]

    def run(self, dims, bugs, arrays, verify_passes=False):
        """Run one call; ``arrays`` are the kernel's tensors in order, output last.

        ``verify_passes``: also verify every compiler pass (slower; same output)."""
        kernel = self.program(dims, bugs, verify_passes)
        if self.mode == "npu":
            import torch_npu  # noqa: F401  (registers the npu device)

            dev = [a.to("npu") for a in arrays]
            kernel(*dev)
            out = dev[-1].cpu()
        else:
            kernel(*arrays)
            out = arrays[-1]
        self._clean_outputs()
        return out

    def _clean_outputs(self) -> None:
        """pypto leaves ~1 MB of generated code per call under ./output: drop it."""
        shutil.rmtree(self.workdir / "output", ignore_errors=True)


def main(argv: list[str]) -> int:
    """Serve requests until the client closes the connection."""
    fd = int(argv[1])
    os.set_inheritable(fd, False)  # pypto's helper processes must not keep the client's pipe
    conn = Connection(fd)
    workdir = Path(argv[2])
    worker = None

    def send(obj) -> None:  # plain pickles, as the client sends (pypto_runtime)
        conn.send_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))

    while True:
        try:
            req = pickle.loads(conn.recv_bytes())
        except EOFError:  # client closed; it removes the scratch dir
            return 0
        kind = req[0]
        try:
            if worker is None:
                worker = Worker(workdir)
            if kind == "ping":
                send(("ok", os.getpid(), None))
            elif kind == "kill":
                sys.stderr.write(f"test hook: worker {os.getpid()} kills itself with {req[1]}\n")
                sys.stderr.flush()
                os.kill(os.getpid(), req[1])
                time.sleep(5)
            elif kind == "sleep":
                time.sleep(req[1])
                send(("ok", None, None))
            elif kind == "run":
                _, dims, bugs, arrays, verify_passes = req
                out = worker.run(dims, bugs, arrays, verify_passes)
                send(("ok", out, worker.verify_log.report()))
            else:
                send(("error", f"unknown request {kind!r}", None))
        except BaseException:  # report, keep serving
            report = worker.verify_log.report() if worker is not None else None
            send(("error", traceback.format_exc(), report))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
