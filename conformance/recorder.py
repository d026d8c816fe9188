"""Per-test statistics that the properties record while Hypothesis runs them: examples run,
draws rejected, the corners of the input domain the examples hit, the first failure
(examples and seconds until it), the shrunk counterexample (the last failing example, which
Hypothesis replays after shrinking, with what kind of failure it was) and the error margins.

Counts cover every example Hypothesis runs for the test, its shrinking replays included.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import hypothesis
import pytest
from hypothesis.control import currently_in_test_context
from hypothesis.errors import HypothesisException

from sparse_attn_conformance.conformance.failures import KernelFailure
from sparse_attn_conformance.strategies.coverage import CORNERS, corners

#: The `user_properties` key under which a test's statistics travel to the report.
STATS_KEY = "conformance_stats"
#: The `user_properties` key under which a suite test's identity travels to the report (from
#: an xdist worker too): `{"nodeid", "file", "property", "kernel"}`, the node id one selects
#: the test with and the kernel name (None for a test not run per kernel).
TEST_KEY = "conformance_test"
#: The `user_properties` key under which a failed test's `failure_kind` travels to the report
#: (it is known only in the process that ran the test).
FAILURE_KIND_KEY = "conformance_failure_kind"
#: The titles of the sections a failed test's report carries (terminal, JSON report).
DIAGNOSTICS_SECTION, REPLAY_SECTION = "kernel diagnostics", "replay this failure"
SHRINKING_SECTION = "shrinking cut short"
#: Error ratios kept per test for the report's distribution plot.
MAX_RATIOS = 2000

#: What a failure was: a property's own check failed (an `AssertionError`), or the kernel
#: raised, crashed or returned something the contract does not allow (anything else).
ASSERTION, KERNEL_ERROR = "assertion", "kernel-error"
FAILURE_KINDS = (ASSERTION, KERNEL_ERROR)


def failure_kind(exc: BaseException) -> str:
    """`ASSERTION` when `exc` is a property's own check failing (an `AssertionError`, or
    `pytest.fail`), `KERNEL_ERROR` for anything else (the harness' `KernelFailure`
    included). For an exception group (Hypothesis found several distinct failures), the
    property's check caught the kernel if it caught any of them."""
    if isinstance(exc, BaseExceptionGroup):
        kinds = {failure_kind(e) for e in exc.exceptions}
        return ASSERTION if ASSERTION in kinds else KERNEL_ERROR
    if isinstance(exc, KernelFailure):
        return KERNEL_ERROR
    if isinstance(exc, (AssertionError, pytest.fail.Exception)):
        return ASSERTION
    return KERNEL_ERROR


@dataclass
class Stats:
    examples: int = 0
    rejected: int = 0
    coverage: dict = field(default_factory=lambda: dict.fromkeys(CORNERS, 0))
    seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    first_failure_example: int | None = None
    first_failure_seconds: float | None = None
    worst_ratio: float = 0.0
    ratios: list = field(default_factory=list)
    counterexample: dict | None = None
    #: the diagnosis of the running example's failure, until the example ends
    pending_diagnosis: dict | None = None

    def as_dict(self) -> dict:
        out = asdict(self)
        out.pop("started")
        out.pop("pending_diagnosis")
        out["seconds"] = time.perf_counter() - self.started
        return out


_current: Stats | None = None


def shrinking(stats: dict, budget: float, cut_short: bool) -> dict | None:
    """How long a failed test took from its first failure to its end (shrinking, and the
    final replay), its shrink budget (seconds), and whether Hypothesis stopped shrinking
    at that budget; None without a failure."""
    first = stats.get("first_failure_seconds")
    if first is None:
        return None
    spent = max(0.0, stats["seconds"] - first)
    return {"seconds": round(spent, 3), "budget": budget, "cut_short": cut_short}


def note_diagnosis(diagnosis: dict, picture: dict | None = None) -> None:
    """Keep the diagnosis of the running example's failure (`attention.counterfactuals`)
    and its picture (`conformance.picture`), for its counterexample in the report."""
    current().pending_diagnosis = {"diagnosis": diagnosis, "picture": picture}


def begin() -> Stats:
    """Start recording for one test (called by the plugin)."""
    global _current
    _current = Stats()
    return _current


def end() -> dict | None:
    global _current
    stats, _current = _current, None
    return stats.as_dict() if stats else None


def current() -> Stats:
    global _current
    if _current is None:  # a property run outside the plugin, e.g. imported directly
        _current = Stats()
    return _current


def note_ratio(ratio: float) -> None:
    """Record a passing comparison's error as a fraction of its tolerance."""
    stats = current()
    stats.worst_ratio = max(stats.worst_ratio, ratio)
    if len(stats.ratios) < MAX_RATIOS:
        stats.ratios.append(round(ratio, 6))


def note_rejected() -> None:
    """Count one draw Hypothesis discarded before the property's body ran (its data ran
    out, or a strategy rejected it). Called by `conformance.draw.draw_case`; the report
    shows the count beside the examples run, so a property that discards most of its draws
    is visible."""
    current().rejected += 1


def note_corners(case) -> list[str]:
    """Count the corners of the input domain `case` hits (`strategies.v1.coverage.corners`)
    and tell Hypothesis, as events `corner: NAME`, inside a Hypothesis test."""
    stats = current()
    hit = corners(case)
    in_test = currently_in_test_context()
    for name in hit:
        stats.coverage[name] = stats.coverage.get(name, 0) + 1
        if in_test:
            hypothesis.event(f"corner: {name}")
    return hit


@contextmanager
def example(case):
    """Wrap one example's body: count it and the corners its case hits, and keep the
    failing case (and the kind of failure, see `failure_kind`) if it raises."""
    stats = current()
    note_corners(case)
    stats.examples += 1
    stats.pending_diagnosis = None
    try:
        yield
    except HypothesisException:
        raise  # Hypothesis' own control flow (a rejected draw), not a failure
    except Exception as exc:
        if not any("config: B=" in n for n in getattr(exc, "__notes__", [])):
            exc.add_note(f"the drawn case:\n{case.describe()}")
        if stats.first_failure_example is None:
            stats.first_failure_example = stats.examples
            stats.first_failure_seconds = time.perf_counter() - stats.started
        stats.counterexample = {
            "size": case.size(),
            "config": asdict(case.config),
            "path": case.path,
            "start_pos": list(case.start_pos) if case.start_pos is not None else None,
            "case": case.describe(),
            "error": f"{type(exc).__name__}: {exc}"[:4000],
            "failure_kind": failure_kind(exc),
        }
        if stats.pending_diagnosis is not None:
            stats.counterexample.update(stats.pending_diagnosis)
        raise
