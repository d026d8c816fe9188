"""The project's own tests run under the suite's default Hypothesis profile (they call the
properties directly; the plugin, which loads the profile for a conformance run, stays off
here), and share the cores between xdist workers as a conformance run does."""

from plugin import cores, profiles


def pytest_configure(config):
    profiles.load(config)
    cores.share_cores(config)
