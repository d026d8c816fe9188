"""The meta-tests' profile runner (tests/in_profile.py): a property imported under one
profile runs under another, derandomized examples repeat, and the property is left as it was."""

from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_attn_conformance.plugin import profiles
from tests.in_profile import in_profile

seen: list = []


@given(data=st.data())
def prop(data, tag):
    seen.append((tag, profiles.current(), data.draw(st.integers(0, 2**60))))


def run(name, tag, **kw):
    seen.clear()
    in_profile(prop, name, **kw)(tag=tag)
    return list(seen)


def test_runs_the_named_profile_and_repeats_its_derandomized_examples():
    before = settings.get_current_profile_name()
    first, again = run("ci", "a"), run("ci", "a")
    assert first == again
    assert {p for _, p, _ in first} == {"ci"}
    assert len(first) == settings.get_profile("ci").max_examples
    assert settings.get_current_profile_name() == before != "ci"  # the profile before is restored


def test_caps_examples_and_leaves_the_property_as_it_was():
    assert len(run("kill", "b", max_examples=3)) == 3
    own = prop.hypothesis.inner_test
    in_profile(prop, "smoke")
    assert prop.hypothesis.inner_test is own
    seen.clear()
    prop(tag="c")  # still callable under its own settings: nothing was applied to it
    assert seen
