"""The suite's Hypothesis profiles and the per-example work budget that goes with each.

A budget bounds the cost of one drawn case (`strategies.config.cost`, about a nanosecond of
reference time per unit on the 2-core machine): a larger profile draws larger calls, not
only more of them.
"""

from __future__ import annotations

from hypothesis import settings

#: deadline off: kernel calls (compilation, an interpreter) have no useful deadline;
#: print_blob: every failure prints its @reproduce_failure blob
_COMMON = dict(deadline=None, print_blob=True)

#: profile -> (max_examples, derandomize, work budget)
PROFILES = {
    # the tiers, smallest first: smoke (does it run at all, in minutes even in simulation),
    # dev (a developer's loop), ci (every pull request), nightly (the hardware pool)
    "smoke": (5, True, 2**20),
    "dev": (30, False, 2**23),
    "ci": (60, True, 2**24),
    "nightly": (400, False, 2**25),
    # the kill-rate run's default: dev's budget, derandomized so that CI's verdicts are stable
    "kill": (30, True, 2**23),
}
DEFAULT_PROFILE = "dev"

#: Hypothesis' own defaults. Not `settings.default`: that is whatever profile is loaded, and
#: Hypothesis loads its built-in "ci" profile (no example database) when the environment
#: looks like CI (`CI`, `GITHUB_ACTIONS`, ...), so the nightly would save no failures.
_BASE = settings.get_profile("default")

for _name, (_n, _derandomize, _budget) in PROFILES.items():
    settings.register_profile(_name, _BASE, max_examples=_n, derandomize=_derandomize, **_COMMON)


def current() -> str:
    return settings.get_current_profile_name()


def budget() -> int:
    """The work budget of the loaded profile (a user's own profile gets dev's)."""
    return PROFILES.get(current(), PROFILES[DEFAULT_PROFILE])[2]


def load(config, default: str = DEFAULT_PROFILE) -> None:
    """Load `default` for a pytest run, unless its command line chose a profile
    (`--hypothesis-profile`, which Hypothesis' own pytest plugin loads)."""
    if default not in PROFILES:
        raise ValueError(f"profiles.load: default expected one of {sorted(PROFILES)}, got {default!r}")
    if not config.getoption("hypothesis_profile", None):
        settings.load_profile(default)
