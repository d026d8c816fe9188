"""Markers per feature of the contract, so that a user can run one part of the suite
(`pytest conformance -m sink`, `-m "window and not mtp"`):

- `window`: the sliding-window (SWA) part of a token's row and its ring of `WIN` slots;
- `compressed`: the compressed-KV part (HCA/CSA entries, their own block table);
- `ratio`: the compress ratio's derived count of live compressed slots;
- `sink`: the attention sink in the softmax denominator;
- `mtp`: multi-token decode (`S > 1`), each token's own derived length (v1) or position (v2).

One mapping, property -> features, applied at collection, rather than a decorator in every
property file: a property listed nowhere gets no feature marker (it is about the call as a
whole, e.g. determinism) and still runs without `-m`.
"""

from __future__ import annotations

import pytest

FEATURES = {
    "window": "the sliding-window (SWA) part of the row and its ring of WIN slots",
    "compressed": "the compressed-KV part of the row (HCA/CSA entries, their block table)",
    "ratio": "the compress ratio's derived count of live compressed slots",
    "sink": "the attention sink in the softmax denominator",
    "mtp": "multi-token decode (S > 1): each token's own derived length",
}
_ALL = tuple(FEATURES)

#: property (test function) -> the features it is about
PROPERTY_FEATURES = {
    "test_matches_reference": _ALL,
    "test_matches_reference_on_model_rows": _ALL,
    "test_model_attention_shape_matches_reference": _ALL,
    "test_unread_rows_and_ignored_entries_cannot_leak": ("window", "compressed", "ratio", "mtp"),
    "test_seed_causal_regression_fixture": ("window", "compressed", "mtp"),
    "test_token_equals_its_one_token_call": ("mtp",),
    "test_other_batches_and_tokens_do_not_matter": ("mtp",),
    "test_index_row_order_does_not_matter": ("window", "compressed"),
    "test_physical_block_labels_do_not_matter": ("window", "compressed"),
    "test_no_later_position_before_the_ring_wraps": ("window", "mtp"),
    "test_no_later_position_after_the_ring_wraps": ("window", "mtp"),
    "test_minus_inf_sink_is_plain_softmax": ("sink",),
    "test_zero_query_closed_form": ("sink",),
    "test_empty_tokens_return_exact_zero": ("sink", "mtp"),
    # v2 (conformance/v2/)
    "test_nothing_past_the_cut_or_in_an_ignored_lane_is_read": ("window", "compressed", "ratio"),
    "test_other_tokens_do_not_matter": ("mtp",),
    "test_lane_order_does_not_matter": ("window", "compressed"),
    "test_window_rows_list_exactly_the_last_win_positions": ("window", "mtp"),
}


def register(config) -> None:
    for name, text in FEATURES.items():
        config.addinivalue_line("markers", f"{name}: {text}")


def features_of(item) -> tuple[str, ...]:
    return PROPERTY_FEATURES.get(getattr(item, "originalname", item.name), ())


@pytest.hookimpl(tryfirst=True)  # before -m deselects by them
def pytest_collection_modifyitems(config, items):
    for item in items:
        for name in features_of(item):
            item.add_marker(getattr(pytest.mark, name))
