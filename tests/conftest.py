"""The project's own tests run under the kill-rate run's profile: dev's examples and budget,
derandomized, because a meta-test that asserts what a strategy reaches or that a property
catches a mutant must give CI the same verdict every run (random dev examples missed a 1-in-40
edge mode in one run of 200). The plugin, which loads the profile for a conformance run, stays
off here; the workers share the cores as a conformance run's do."""

from sparse_attn_conformance.plugin import cores, profiles


def pytest_configure(config):
    profiles.load(config, default="kill")
    cores.share_cores(config)
