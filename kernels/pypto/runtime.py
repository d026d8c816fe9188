"""Client side of the isolated pypto worker (see :mod:`kernels.pypto.worker`).

pypto 0.2.0 can SIGSEGV or abort while building, compiling or interpreting a graph. Every
call therefore runs in a persistent child process: a crash raises :class:`KernelCrashed`
(signal and stderr tail) here and a hang is cut by a timeout (:class:`KernelTimeout`);
in both cases the worker is discarded and the next call starts a fresh one. One worker per
calling process, so ``pytest -n auto`` workers each get their own.

Requests and responses travel as pickles over a :mod:`multiprocessing.connection` pipe
(its framing, and ``poll`` for the timeout); the worker's stdout and stderr go to a log.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

import sparse_attn_conformance

if TYPE_CHECKING:
    import torch

DEFAULT_TIMEOUT_S = 300.0  # a cold compile of a new shape takes seconds; a hang is cut here
# pypto 0.2.0 keeps about 28 MiB per simulated call (measured): a nightly run's worker grew
# to 11 GiB and was killed by the OOM killer. The worker is recycled past this size.
MAX_RSS_MB = int(os.environ.get("SPARSE_ATTN_PYPTO_MAX_RSS_MB", "1500"))
#: Where `import sparse_attn_conformance` is found (site-packages, or a checkout): first on
#: the worker's path, so that it runs the same suite as its client.
_PACKAGE_PARENT = Path(sparse_attn_conformance.__file__).resolve().parent.parent


class KernelError(RuntimeError):
    """The kernel raised inside the worker. ``verify`` holds pypto's verification report."""

    def __init__(self, message: str, verify: dict | None = None):
        super().__init__(message + "\n" + describe_verify(verify))
        self.verify = verify


class KernelCrashed(KernelError):
    """The worker died (signal or exit) during a call."""

    def __init__(self, signum: int | None, returncode: int | None, stderr_tail: str):
        name = signal.Signals(signum).name if signum else f"exit code {returncode}"
        RuntimeError.__init__(self, f"pypto worker died ({name}); stderr tail:\n{stderr_tail}")
        self.signum = signum
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        self.verify = None


class KernelTimeout(KernelError):
    """The call did not finish within its timeout; the worker was killed."""

    def __init__(self, timeout_s: float, stderr_tail: str):
        RuntimeError.__init__(self, f"pypto worker timed out after {timeout_s:g} s; "
                                    f"stderr tail:\n{stderr_tail}")
        self.timeout_s = timeout_s
        self.stderr_tail = stderr_tail
        self.verify = None


def describe_verify(verify: dict | None) -> str:
    """One line about pypto's pass verification, for failure messages."""
    if not verify or not verify.get("produced"):
        return "pypto pass verification: no result produced"
    first = verify.get("first_divergent_pass")
    if first is None and not verify.get("passed"):
        return ("pypto pass verification: per-pass checks off (kernels.pypto.kernel."
                "verify_passes re-runs a call with them)")
    if first is None:
        return f"pypto pass verification: all verified passes agree ({', '.join(verify['passed'])})"
    return (f"pypto pass verification: first divergent pass {first} "
            f"(divergent: {', '.join(verify['divergent_passes'])})")


_EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit))(?::\s?(.*))?$")
_OP = re.compile(r"(\w+)OpError\b")
_WHERE = re.compile(r"/\*\s*(\S+:\d+)\s*\*/")
_FUNC = re.compile(r"^func:\s*(\S+)", re.M)


def pypto_error_summary(traceback_text: str) -> str:
    """The failure message for an exception raised in the worker: the exception and pypto's
    own last line first, then the op, the kernel program's line and pypto's function where
    it happened when pypto's message names them, then the worker's traceback (which ends
    with pypto's whole message)."""
    lines = traceback_text.rstrip().splitlines()
    start = max((i for i, ln in enumerate(lines) if _EXC_LINE.match(ln)), default=None)
    if start is None:
        return f"pypto raised in the worker:\n{traceback_text.rstrip()}"
    block = "\n".join(lines[start:])
    exc = _EXC_LINE.match(lines[start]).group(1).rsplit(".", 1)[-1]
    last = lines[-1].strip()
    head = f"pypto raised {exc} in the worker: {last}"
    where = []
    if op := _OP.search(block):
        where.append(f"op {op.group(1)}")
    if loc := _WHERE.search(block):
        where.append(f"at {loc.group(1)}")
    if func := _FUNC.search(block):
        where.append(f"in pypto function {func.group(1)}")
    parts = [head] + (["  " + " ".join(where)] if where else [])
    parts.append(f"worker traceback:\n{traceback_text.rstrip()}")
    return "\n".join(parts)


class PyptoWorker:
    """A persistent worker process, restarted after a crash or timeout."""

    def __init__(self):
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._log_path: Path | None = None
        self._workdir: Path | None = None
        self._lock = threading.Lock()

    def _start(self) -> None:
        conn, child = multiprocessing.Pipe()
        log = tempfile.NamedTemporaryFile(prefix="sparse-attn-pypto-worker-", suffix=".log",
                                          delete=False)
        self._log_path = Path(log.name)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(_PACKAGE_PARENT) + os.pathsep + env.get("PYTHONPATH", "")
        # the client owns the worker's scratch dir, so a killed worker leaves none behind
        self._workdir = Path(tempfile.mkdtemp(prefix="sparse-attn-pypto-"))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "sparse_attn_conformance.kernels.pypto.worker", str(child.fileno()),
             str(self._workdir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            pass_fds=(child.fileno(),), env=env, cwd=tempfile.gettempdir(),
            start_new_session=True,  # a timeout kill reaches pypto's helper processes too
        )
        log.close()
        child.close()  # the worker holds the only other end: its exit reads as EOF here
        self._conn = conn

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._log_path is not None:  # callers read the tail before stopping
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    def stderr_tail(self, n: int = 4000) -> str:
        """The last ``n`` characters of the worker's combined stdout/stderr."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        data = self._log_path.read_bytes()[-n:]
        return data.decode("utf-8", "replace")

    @property
    def pid(self) -> int | None:
        """Process id of the running worker, if any."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def request(self, req: tuple, timeout_s: float = DEFAULT_TIMEOUT_S):
        """Send ``req``; return the worker's ``(status, value, report)``."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._stop()
                self._start()
            try:
                # plain pickles: multiprocessing's own pickler would share tensors through
                # a resource server only its own child processes can reach
                self._conn.send_bytes(pickle.dumps(req, protocol=pickle.HIGHEST_PROTOCOL))
            except OSError:  # the worker is gone: reading the response says how
                pass
            if not self._conn.poll(timeout_s):
                tail = self.stderr_tail()
                self._stop()
                raise KernelTimeout(timeout_s, tail)
            try:
                return pickle.loads(self._conn.recv_bytes())
            except (EOFError, OSError):  # the worker exited: the pipe closed
                rc = self._proc.wait()
                tail = self.stderr_tail()
                self._stop()
                raise KernelCrashed(-rc if rc < 0 else None, rc, tail) from None

    def call(self, req: tuple, timeout_s: float = DEFAULT_TIMEOUT_S):
        """Send ``req`` and return ``(value, report)``; raise :class:`KernelError` on error.

        After an error the worker is discarded: pypto 0.2.0 keeps its recording state open
        after an exception raised while it builds or runs a program, and every later call in
        that process would fail with "function nested is not allowed", hiding the real error.
        """
        status, value, report = self.request(req, timeout_s)
        if status != "ok":
            self.close()
            raise KernelError(pypto_error_summary(value), report)
        self.recycle_if_large()
        return value, report

    def rss_mb(self) -> int | None:
        """The worker's resident memory in MiB (Linux), or None."""
        pid = self.pid
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) // 1024
        except (OSError, TypeError):
            return None
        return None

    def recycle_if_large(self, limit_mb: int = MAX_RSS_MB) -> bool:
        """Stop the worker if it has grown past ``limit_mb``; the next call starts a fresh one."""
        rss = self.rss_mb()
        if rss is not None and rss > limit_mb:
            with self._lock:
                self._stop()
            return True
        return False

    def close(self) -> None:
        """Stop the worker process."""
        with self._lock:
            self._stop()


_default: PyptoWorker | None = None


def default_worker() -> PyptoWorker:
    """The calling process's shared worker (created on first use)."""
    global _default
    if _default is None:
        _default = PyptoWorker()
        atexit.register(_default.close)
    return _default


#: Set (to anything but "" or "0") to have pypto verify every compiler pass of every call.
VERIFY_PASSES_ENV = "SPARSE_ATTN_PYPTO_VERIFY_PASSES"


def run_program(worker: PyptoWorker, dims, bugs: frozenset, arrays: list,
                timeout_s: float = DEFAULT_TIMEOUT_S,
                verify_passes: bool | None = None) -> tuple[torch.Tensor, dict | None]:
    """Run a planned program (either convention's `dims` and `arrays`) with `bugs` in
    `worker`: its padded output and pypto's pass-verification report.

    `verify_passes`: also have pypto verify every compiler pass (default: from
    `$SPARSE_ATTN_PYPTO_VERIFY_PASSES`, else off). A lowered stage that diverges from the
    tensor graph raises `KernelError`: the NPU would run the lowered program, whatever the
    graph's numbers say."""
    if verify_passes is None:
        verify_passes = os.environ.get(VERIFY_PASSES_ENV, "") not in ("", "0")
    out, report = worker.call(("run", dims, frozenset(bugs), arrays, bool(verify_passes)),
                              timeout_s)
    if verify_passes and report and report.get("first_divergent_pass"):
        raise KernelError("pypto's per-pass verification: a lowered stage diverges from the "
                          "tensor graph", report)
    return out, report
