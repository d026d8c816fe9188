"""One NPU card per xdist worker: `--npu-cards=0-7` (or `$SPARSE_ATTN_NPU_CARDS`) pins each
worker to its card before anything of pypto or torch_npu runs in it, gives it its own run
folder (pypto's output and CANN's logs, never shared with another worker), and checks that
it sees exactly that one card.

The channel is the environment, because CANN reads `ASCEND_RT_VISIBLE_DEVICES` when it
initialises and the pypto worker process (`kernels.pypto.runtime`, started with `Popen`,
never forked) inherits it; `kernels.pypto.pool` checks the card again in that process.
Worker `gwK` (xdist numbers them from 0) gets `cards[K // workers_per_card]`; without xdist
the one process takes the first card. Card ids are the physical ids CANN numbers from 0.

Called first thing in the plugin's `pytest_configure`, only when the suite is on and the
option (or its variable) was given: otherwise nothing here runs.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

import pytest

from sparse_attn_conformance.kernels.pypto.pool import ENV_CARD, VISIBLE, pinned_card

ENV_CARDS = "SPARSE_ATTN_NPU_CARDS"
ENV_PER_CARD = "SPARSE_ATTN_NPU_WORKERS_PER_CARD"
ENV_RUN_DIR = "SPARSE_ATTN_NPU_RUN_DIR"
#: set in a pinned process: its own folder (and the card it was given, `ENV_CARD`)
ENV_WORKER_DIR = "SPARSE_ATTN_NPU_WORKER_DIR"
#: pypto's output folder (by default named after the second it started: workers collide)
OUTPUT_DIR = "TILE_FWK_OUTPUT_DIR"
LOG_DIR = "ASCEND_PROCESS_LOG_PATH"
#: pypto's run records ($PYPTO_HOME/run/rundata_<second>, default ~/.pypto): workers collide
PYPTO_HOME = "PYPTO_HOME"

_PART = re.compile(r"(\d+)(?:-(\d+))?")
_EXPECTED = "card ids such as 0-7 or 0,2,4-5 (ascending, each once)"


def parse_cards(spec: str, option: str = "--npu-cards") -> list[int]:
    """`"0-3,6"` -> `[0, 1, 2, 3, 6]`. CANN itself stops parsing at the first character it
    does not expect, silently, so anything but ascending ids and ranges is refused here."""
    cards: list[int] = []
    for part in spec.replace(" ", "").split(","):
        m = _PART.fullmatch(part)
        if not m:
            raise pytest.UsageError(f"{option}: expected {_EXPECTED}, got {spec!r} "
                                    f"({part!r} is not a card id or a range)")
        lo, hi = int(m[1]), int(m[2] if m[2] is not None else m[1])
        if hi < lo:
            raise pytest.UsageError(f"{option}: expected {_EXPECTED}, got {spec!r} "
                                    f"(range {part!r} runs backwards)")
        cards += range(lo, hi + 1)
    if cards != sorted(set(cards)):
        raise pytest.UsageError(f"{option}: expected {_EXPECTED}, got {spec!r} "
                                f"(ids out of order or repeated)")
    return cards


def _positive(text: str, option: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise pytest.UsageError(f"{option}: expected a whole number >= 1, got {text!r}")
    return int(text)


def requested(config) -> tuple[list[int], int] | None:
    """`(cards, workers_per_card)` from the options or their variables; None if not asked."""
    spec = config.getoption("npu_cards", None) or os.environ.get(ENV_CARDS)
    if not spec:
        return None
    option = "--npu-cards" if config.getoption("npu_cards", None) else f"${ENV_CARDS}"
    cards = parse_cards(spec, option)
    per = config.getoption("npu_workers_per_card", None)
    per = _positive(str(per), "--npu-workers-per-card") if per is not None else _positive(
        os.environ.get(ENV_PER_CARD, "1"), f"${ENV_PER_CARD}")
    inherited = os.environ.get(VISIBLE)
    if inherited and not hasattr(config, "workerinput"):  # a worker sees its own pin
        allowed = set(parse_cards(inherited, f"${VISIBLE} (inherited)"))
        if not set(cards) <= allowed:
            raise pytest.UsageError(f"{option}: expected cards this machine lets the run use "
                                    f"({VISIBLE}={inherited}), got {spec!r}")
    return cards, per


def card_of(worker_index: int, cards: list[int], per_card: int) -> int:
    """The card of xdist worker `worker_index`."""
    return cards[worker_index // per_card]


def worker_index() -> tuple[str, int, int]:
    """`(worker id, index, worker count)` of this process (`("main", 0, 1)` without xdist)."""
    wid = os.environ.get("PYTEST_XDIST_WORKER")
    if not wid:
        return "main", 0, 1
    return wid, int(wid.removeprefix("gw")), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))


def _check_capacity(workers: int, cards: list[int], per_card: int) -> None:
    if workers > len(cards) * per_card:
        raise pytest.UsageError(
            f"--npu-cards: expected at most {len(cards) * per_card} xdist workers "
            f"({len(cards)} cards x {per_card} per card, --npu-workers-per-card), got {workers}")


def _run_dir(config) -> Path:
    """The run's folder: `--npu-run-dir`, else one the controller made (and exported, so
    that its workers, which inherit its environment, find the same one)."""
    given = config.getoption("npu_run_dir", None) or os.environ.get(ENV_RUN_DIR)
    if not given:
        given = tempfile.mkdtemp(prefix="sparse-attn-npu-run-")
    os.environ[ENV_RUN_DIR] = str(Path(given).resolve())
    return Path(os.environ[ENV_RUN_DIR])


def pin(config) -> dict | None:
    """Pin this process (an xdist worker, or the one process without xdist) to its card;
    on the xdist controller, only check the worker count. Returns what was set, or None."""
    asked = requested(config)
    if asked is None:
        return None
    cards, per_card = asked
    run_dir = _run_dir(config)
    numprocesses = config.getoption("numprocesses", None)
    if not hasattr(config, "workerinput") and numprocesses and config.getoption("dist", "no") != "no":
        _check_capacity(int(numprocesses), cards, per_card)  # the controller runs no test
        return None
    wid, index, count = worker_index()
    _check_capacity(count, cards, per_card)
    if "torch_npu" in sys.modules:
        npu = getattr(sys.modules["torch_npu"], "npu", None)
        if npu is not None and getattr(npu, "is_initialized", lambda: False)():
            raise RuntimeError(f"{wid}: torch_npu initialised the NPU before the worker was "
                               f"pinned to a card; nothing may touch the NPU before pytest_configure")
    card = card_of(index, cards, per_card)
    folder = run_dir / wid
    env = {VISIBLE: str(card), ENV_CARD: str(card), ENV_WORKER_DIR: str(folder),
           OUTPUT_DIR: str(folder / "output"), LOG_DIR: str(folder / "log"),
           PYPTO_HOME: str(folder / "pypto_home"), "TMPDIR": str(folder / "tmp")}
    for sub in ("output", "log", "pypto_home", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    os.environ.update(env)
    # the pypto worker's scratch dir and log are temp files: keep them in this worker's folder
    tempfile.tempdir = env["TMPDIR"]
    pinned_card()  # by the environment; on a card the pypto worker also asks torch_npu
    return env


def header(config) -> str | None:
    """The report header's line about the pool, or None without one."""
    asked = requested(config)
    if asked is None:
        return None
    cards, per = asked
    return (f"npu pool: cards {','.join(map(str, cards))}, {per} worker(s) per card, "
            f"run folder {os.environ.get(ENV_RUN_DIR)}")


def pytest_report_header(config):
    line = header(config)
    return [line] if line else []
