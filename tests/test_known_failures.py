"""Known failures: listed ones run as strict xfail (a listed failure that passes fails the
run), matched by kernel and suite version; a malformed file is a usage error."""

import pytest

from sparse_attn_conformance.nightly import known_failures
from tests.pool_helpers import SUITE, run_pytest

ENTRY = """
[[failure]]
kernel = "{kernel}"
suite_version = "{version}"
test = "test_zero_query_closed_form"
reason = "{reason}"
"""


def test_listed_failures_xfail_and_a_listed_pass_is_reported(tmp_path):
    version = known_failures.suite_version()
    path = tmp_path / "known-failures.toml"
    path.write_text(ENTRY.format(kernel="mutant-sink-*", version=version, reason="sink dropped")
                    + ENTRY.format(kernel="reference", version="*", reason="never failed")
                    + ENTRY.format(kernel="mutant-sink-*", version="0.0.0", reason="old version"))
    res = run_pytest(str(SUITE / "test_sink_and_empty.py") + "::test_zero_query_closed_form",
                     "--kernel=reference,mutant-sink-dropped", "-p", "no:xdist", "-rxX",
                     "--hypothesis-profile=smoke", f"--known-failures={path}")
    out = res.stdout
    assert res.returncode == 1, out[-2000:]
    assert "known failures: 3 listed" in out
    assert "XFAIL" in out and "known failure: sink dropped" in out
    assert "[XPASS(strict)] known failure: never failed" in out
    assert "1 failed, 1 xfailed" in out


@pytest.mark.parametrize("text, what", [
    ("[[failure]]\nkernel = 'pypto'\n", "each [[failure]] to have exactly the keys"),
    ("[[failure]]\nkernel='a'\nsuite_version='1'\ntest='t'\nreason=''\n", "non-empty strings"),
    ("[other]\nx = 1\n", "only [[failure]] tables"),
    ("not toml [", "a TOML file"),
])
def test_a_malformed_file_is_a_usage_error(tmp_path, text, what):
    path = tmp_path / "k.toml"
    path.write_text(text)
    with pytest.raises(pytest.UsageError, match=r"--known-failures: expected") as e:
        known_failures.load(str(path))
    assert what in str(e.value) and str(path) in str(e.value)
