"""Every property fails on at least one seeded faulty kernel: the property is run directly,
in-process, against the faulty kernel named beside it, and must fail by its own assertion
(a kernel that raises is a crash, not a property's catch)."""

import pytest

from sparse_attn_conformance.conformance import (
    test_aliasing,
    test_dequantisation,
    test_determinism,
    test_reference_match,
    test_sink_and_empty,
)
from sparse_attn_conformance.conformance.v1 import (
    test_causal_length,
    test_independence,
    test_invariance,
    test_model_shape,
    test_per_token_derivation,
    test_position_causality,
    test_regression_fixture,
)
from sparse_attn_conformance.conformance.v2 import test_causal_cut
from sparse_attn_conformance.conformance.v2 import test_independence as test_independence_v2
from sparse_attn_conformance.conformance.v2 import test_invariance as test_invariance_v2
from sparse_attn_conformance.kernels.registry import kernel_under_test
from tests.in_profile import in_profile

CATCHES = [
    (test_reference_match.test_matches_reference, "mutant-sink-dropped"),
    (test_reference_match.test_matches_reference_on_model_rows, "mutant-per-batch-length"),
    (test_causal_length.test_unread_rows_and_ignored_entries_cannot_leak,
     "mutant-gather-before-mask"),
    (test_regression_fixture.test_seed_causal_regression_fixture, "mutant-per-batch-length"),
    (test_per_token_derivation.test_token_equals_its_one_token_call, "mutant-per-batch-length"),
    (test_independence.test_other_batches_and_tokens_do_not_matter, "mutant-batch0-length"),
    (test_invariance.test_index_row_order_does_not_matter, "mutant-normalised-tile-merge"),
    (test_invariance.test_physical_block_labels_do_not_matter, "mutant-block-table-ignored"),
    (test_sink_and_empty.test_minus_inf_sink_is_plain_softmax, "mutant-sink-wrong-sign"),
    (test_sink_and_empty.test_zero_query_closed_form, "mutant-sink-dropped"),
    (test_sink_and_empty.test_empty_tokens_return_exact_zero, "mutant-empty-token-nan"),
    (test_sink_and_empty.test_logits_far_below_zero_still_weigh_their_rows,
     "mutant-finite-empty-sentinel"),
    (test_sink_and_empty.test_logits_far_below_zero_still_weigh_their_rows,
     "mutant-v2-finite-empty-sentinel"),
    (test_determinism.test_two_calls_give_identical_bits, "mutant-nondeterministic-tile-order"),
    (test_determinism.test_two_calls_give_identical_bits, "mutant-sanitises-indices-in-place"),
    (test_position_causality.test_no_later_position_before_the_ring_wraps,
     "mutant-per-batch-length"),
    # H = 64 is not a multiple of that mutant's 24-head tile
    (test_model_shape.test_model_attention_shape_matches_reference, "mutant-head-tile-remainder"),
    # calling convention v2: its own properties, and the shared ones on a v2 kernel
    (test_causal_cut.test_nothing_past_the_cut_or_in_an_ignored_lane_is_read,
     "mutant-v2-ignored-reads-row-zero"),
    (test_independence_v2.test_other_tokens_do_not_matter, "mutant-v2-single-block-token-mix"),
    (test_invariance_v2.test_lane_order_does_not_matter, "mutant-v2-window-by-count"),
    (test_invariance_v2.test_physical_block_labels_do_not_matter,
     "mutant-v2-identity-block-table"),
    (test_reference_match.test_matches_reference, "mutant-v2-overlay-offset"),
    (test_reference_match.test_matches_reference_on_model_rows, "mutant-v2-cmp-tail-cap"),
    # aliasing (both conventions) and the FP8 formats' dequantisation (v2 kernels)
    (test_aliasing.test_two_live_entries_on_one_physical_row_count_twice,
     "mutant-distinct-addresses"),
    (test_aliasing.test_two_live_entries_on_one_physical_row_count_twice,
     "mutant-v2-distinct-addresses"),
    (test_dequantisation.test_zero_query_gives_the_mean_of_the_dequantised_rows,
     "mutant-fp8-neighbour-scale"),
    (test_dequantisation.test_one_live_lane_returns_its_dequantised_value,
     "mutant-fp8-scale-on-rope"),
]


#: (property, mutant) pairs whose first failing example in the kill profile is a crash of
#: the mutant (an IndexError): Hypothesis reports the property's own failure beside it only
#: after shrinking has told the two apart
CRASH_FIRST = {("test_other_batches_and_tokens_do_not_matter", "mutant-batch0-length"),
               ("test_physical_block_labels_do_not_matter", "mutant-block-table-ignored")}


def in_its_profile(prop, shrink: bool = True):
    """`prop` under the kill-rate run's profile (derandomized, so the verdict is the same on
    every run); the model-shape property under the ci profile, with its own 4 examples."""
    if prop is test_model_shape.test_model_attention_shape_matches_reference:
        return in_profile(prop, "ci", max_examples=4, shrink=shrink)
    return in_profile(prop, "kill", shrink=shrink)


def all_properties():
    import inspect

    modules = [test_aliasing, test_dequantisation, test_causal_cut, test_independence_v2, test_invariance_v2,
               test_causal_length, test_determinism, test_independence, test_invariance,
               test_model_shape, test_per_token_derivation, test_reference_match, test_regression_fixture,
               test_sink_and_empty, test_position_causality]
    return {fn for m in modules for name, fn in inspect.getmembers(m, inspect.isfunction)
            if name.startswith("test_") and fn.__module__ == m.__name__}


def test_every_kernel_property_is_listed():
    listed = {fn for fn, _ in CATCHES}
    findings = {fn for fn in all_properties() if getattr(fn, "pytestmark", None)
                and any(m.name == "contract_finding" for m in fn.pytestmark)}
    assert all_properties() - findings - listed == set()


@pytest.mark.parametrize("prop, mutant", CATCHES, ids=[f"{p.__name__}-{m}" for p, m in CATCHES])
def test_property_catches_its_mutant(prop, mutant):
    # the catch is what is measured here, not the shrunk example (the kill-rate run shrinks
    # each kill); shrinking one costs up to a minute (an FP8 case: minutes). Where the
    # mutant also crashes first, only shrinking finds the property's own failure beside it
    shrink = (prop.__name__, mutant) in CRASH_FIRST
    with pytest.raises(Exception) as info:
        in_its_profile(prop, shrink=shrink)(kernel=kernel_under_test(mutant))
    # Hypothesis may also find the mutant crashing (an ExceptionGroup of distinct failures);
    # the property's own check must be among them: a crash alone is not the property's catch
    errors = info.value.exceptions if isinstance(info.value, ExceptionGroup) else [info.value]
    assert any(isinstance(e, AssertionError) for e in errors), errors


@pytest.mark.parametrize("prop, convention", sorted(
    {(p, kernel_under_test(m).convention) for p, m in CATCHES},
    key=lambda pc: (pc[0].__module__, pc[0].__name__, pc[1])),
    ids=lambda x: x if isinstance(x, str) else x.__name__)
def test_property_passes_on_the_reference(prop, convention):
    # the dequantisation properties need a kernel that reads the FP8 formats: the correct
    # FP8 path of the seeded fp8 kernels (both formats)
    fp8 = prop.__module__ == test_dequantisation.__name__
    name = "fp8-dequant-v2" if fp8 else {"v1": "reference", "v2": "reference-v2"}[convention]
    in_its_profile(prop)(kernel=kernel_under_test(name))
