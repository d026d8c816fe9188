"""Per-test statistics that the properties record while Hypothesis runs them: examples run,
the first failure (examples and seconds until it), the shrunk counterexample (the last
failing example, which Hypothesis replays after shrinking) and the error margins."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from hypothesis.errors import HypothesisException

#: The `user_properties` key under which a test's statistics travel to the report.
STATS_KEY = "conformance_stats"
#: Error ratios kept per test for the report's distribution plot.
MAX_RATIOS = 2000


@dataclass
class Stats:
    examples: int = 0
    seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    first_failure_example: int | None = None
    first_failure_seconds: float | None = None
    worst_ratio: float = 0.0
    ratios: list = field(default_factory=list)
    counterexample: dict | None = None

    def as_dict(self) -> dict:
        out = asdict(self)
        out.pop("started")
        out["seconds"] = time.perf_counter() - self.started
        return out


_current: Stats | None = None


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


@contextmanager
def example(case, detail: str = ""):
    """Wrap one example's body: count it, and keep the failing case if it raises."""
    stats = current()
    stats.examples += 1
    try:
        yield
    except HypothesisException:
        raise  # Hypothesis' own control flow (a rejected draw), not a failure
    except Exception as exc:
        if detail or not any("config: B=" in n for n in getattr(exc, "__notes__", [])):
            exc.add_note(f"the failing call:\n{case.describe()}{detail}")
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
        }
        raise
