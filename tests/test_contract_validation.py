"""The contract validator: every violation names the argument, the expectation and the value."""

import pytest
import torch

from sparse_attn_conformance.contracts.v1 import (
    ContractError,
    Preconditions,
    derived_lengths,
    live_mask,
    validate,
)


def valid_kwargs(B=2, S=2, H=2, D=8, WIN=4, IDX_TOPK=2, BLOCK=2):
    return dict(
        q=torch.zeros(B, S, H, D, dtype=torch.bfloat16),
        ori_kv=torch.zeros(B * 2, BLOCK, D, dtype=torch.bfloat16),
        ori_block_table=torch.arange(B * 2, dtype=torch.int32).reshape(B, 2),
        cmp_kv=torch.zeros(B, BLOCK, D, dtype=torch.bfloat16),
        cmp_block_table=torch.arange(B, dtype=torch.int32).reshape(B, 1),
        topk_idxs=torch.full((B, S, WIN + IDX_TOPK), -1, dtype=torch.int32),
        attn_sink=torch.zeros(H), seqused_kv=torch.full((B,), 5, dtype=torch.int32),
        softmax_scale=0.5, window_size=WIN)


def test_valid_inputs_pass():
    inputs = validate(**valid_kwargs())
    assert (inputs.B, inputs.S, inputs.TOPK, inputs.IDX_TOPK) == (2, 2, 6, 2)


@pytest.mark.parametrize("change, message", [
    (dict(q=torch.zeros(2, 2, 2, 8)), r"q: expected dtype torch.bfloat16, got torch.float32"),
    (dict(q=torch.zeros(2, 2, 8, dtype=torch.bfloat16)), r"q: expected 4 dimensions"),
    (dict(seqused_kv=torch.full((2, 2), 5, dtype=torch.int32)),
     r"seqused_kv: expected 1 dimensions, got shape \(2, 2\)"),
    (dict(seqused_kv=torch.tensor([5, -1], dtype=torch.int32)),
     r"seqused_kv: expected every entry >= 0, got \[5, -1\]"),
    (dict(seqused_kv=torch.full((3,), 5, dtype=torch.int32)), r"seqused_kv: expected shape \[B=2\]"),
    (dict(topk_idxs=torch.full((2, 2, 3), -1, dtype=torch.int32)),
     r"topk_idxs: expected shape \[B=2, S=2, TOPK = WIN \+ IDX_TOPK >= WIN=4\]"),
    (dict(topk_idxs=torch.full((2, 2, 6), -1, dtype=torch.int64)), r"topk_idxs: expected dtype torch.int32"),
    (dict(ori_block_table=torch.zeros(2, 3, dtype=torch.int32)),
     r"ori_block_table: expected shape \[B=2, ceil\(WIN/BLOCK\)=2\]"),
    (dict(ori_block_table=torch.tensor([[0, 1], [2, 9]], dtype=torch.int32)),
     r"ori_block_table\[1\]: expected block ids in \[0, 4\) for the 4 live window slots, got \[2, 9\]"),
    (dict(seqused_kv=torch.full((2,), 9, dtype=torch.int32)),
     r"cmp_block_table\[0\]: expected at least ceil\(cmp_valid/BLOCK\) = 3 columns"),
    (dict(cmp_block_table=torch.tensor([[0], [5]], dtype=torch.int32)),
     r"cmp_block_table\[1\]: expected block ids in \[0, 2\)"),
    (dict(attn_sink=torch.zeros(3)), r"attn_sink: expected shape \[H=2\]"),
    (dict(attn_sink=torch.tensor([0.0, float("nan")])), r"attn_sink: expected no NaN"),
    (dict(cmp_kv=torch.zeros(2, 3, 8, dtype=torch.bfloat16)), r"cmp_kv: expected shape \[N_cmp >= 1, BLOCK=2, D=8\]"),
    (dict(window_size=0), r"window_size: expected an int >= 1, got 0"),
    (dict(softmax_scale=float("inf")), r"softmax_scale: expected a finite python float, got inf"),
    (dict(extra=1), r"arguments: expected exactly .* unexpected \['extra'\]"),
])
def test_each_violation_is_named(change, message):
    kw = valid_kwargs()
    kw.update(change)
    with pytest.raises(ContractError, match=message):
        validate(**kw)


def test_missing_argument_is_named():
    kw = valid_kwargs()
    del kw["attn_sink"]
    with pytest.raises(ContractError, match=r"missing \['attn_sink'\]"):
        validate(**kw)


def test_unread_block_table_entries_may_hold_anything():
    kw = valid_kwargs()
    kw["seqused_kv"] = torch.tensor([1, 1], dtype=torch.int32)  # one live window slot
    kw["ori_block_table"] = torch.tensor([[0, -7], [1, 99]], dtype=torch.int32)
    validate(**kw)


def test_derived_lengths_follow_the_seed_formula():
    seq_used, wv, cv = derived_lengths(torch.tensor([130, 1, 0], dtype=torch.int32), S=3,
                                       window_size=128)
    assert seq_used.tolist() == [[128, 129, 130], [-1, 0, 1], [-2, -1, 0]]
    assert wv.tolist() == [[128, 128, 128], [0, 0, 1], [0, 0, 0]]
    assert cv.tolist() == [[0, 1, 2], [0, 0, 0], [0, 0, 0]]


def test_live_mask_reads_entries_by_value():
    rows = torch.tensor([[[0, 3, 4, 5, 6, -1, 2**31 - 1, 3]]], dtype=torch.int32)
    live = live_mask(rows, torch.tensor([6], dtype=torch.int32), window_size=4)
    # window_valid 4, cmp_valid 2: window 0..3 and compressed WIN+0, WIN+1 are live
    assert live.tolist() == [[[True, True, True, True, False, False, False, True]]]


def test_preconditions_reject_unknown_dims():
    with pytest.raises(ContractError, match=r"Preconditions.dims: expected keys among"):
        Preconditions(dims={"heads": (2,)})
    with pytest.raises(ContractError, match=r"Preconditions.dims\['H'\]: expected a non-empty"):
        Preconditions(dims={"H": ()})


def test_preconditions_accept_declared_whole_shapes_only_whole():
    from sparse_attn_conformance.contracts.v1 import Preconditions

    pre = Preconditions(dims={"H": (2,), "D": (16,), "B": (1, 2)},
                        shapes=({"H": 64, "D": 512},))
    assert pre.accepts({"H": 2, "D": 16, "B": 2})
    assert pre.accepts({"H": 64, "D": 512, "B": 1})
    assert not pre.accepts({"H": 64, "D": 16})  # half of a declared shape
    assert not pre.accepts({"H": 64, "D": 512, "B": 64})  # B outside dims
    with pytest.raises(ContractError, match="Preconditions.shapes: expected mappings"):
        Preconditions(shapes=({"X": 1},))
