"""The reference against values worked out by hand."""

import math

import torch

from sparse_attn_conformance.kernels.torch import reference
from tests.test_contract_validation import valid_kwargs


def test_single_live_row_with_sink():
    kw = valid_kwargs(B=1, S=1, H=1, D=8, WIN=4, IDX_TOPK=2, BLOCK=2)
    kw["ori_kv"][kw["ori_block_table"][0, 1], 0] = 2.0      # window slot 2
    kw["topk_idxs"][0, 0, 0] = 2
    kw["seqused_kv"] = torch.tensor([3], dtype=torch.int32)
    kw["attn_sink"] = torch.tensor([0.5])
    o = reference.sparse_attn(**kw)
    # one live logit z = 0 (q = 0): o = v / (1 + exp(0.5 - 0))
    assert torch.allclose(o[0, 0, 0], torch.full((8,), 2.0 / (1 + math.exp(0.5))))


def test_duplicates_count_twice_and_pads_are_ignored():
    kw = valid_kwargs(B=1, S=1, H=1, D=8, WIN=4, IDX_TOPK=2, BLOCK=2)
    kw["ori_kv"][kw["ori_block_table"][0, 0], 0] = 1.0       # slot 0
    kw["ori_kv"][kw["ori_block_table"][0, 0], 1] = 4.0       # slot 1
    kw["topk_idxs"][0, 0, :4] = torch.tensor([0, -1, 0, 1])
    kw["seqused_kv"] = torch.tensor([2], dtype=torch.int32)
    kw["attn_sink"] = torch.tensor([float("-inf")])
    o = reference.sparse_attn(**kw)
    assert torch.allclose(o[0, 0, 0], torch.full((8,), (1 + 1 + 4) / 3))


def test_empty_token_is_exactly_zero_and_inf_sink_gives_zero():
    kw = valid_kwargs(B=1, S=2, H=2, D=8)
    kw["ori_kv"][:] = float("nan")
    kw["topk_idxs"][0, :, 0] = 0
    kw["seqused_kv"] = torch.tensor([0], dtype=torch.int32)
    assert torch.equal(reference.sparse_attn(**kw), torch.zeros(1, 2, 2, 8))
    kw["ori_kv"][:] = 1.0
    kw["seqused_kv"] = torch.tensor([2], dtype=torch.int32)
    kw["attn_sink"] = torch.tensor([float("inf"), float("-inf")])
    o = reference.sparse_attn(**kw)
    assert torch.equal(o[0, :, 0], torch.zeros(2, 8))       # +inf sink swallows everything
    assert torch.allclose(o[0, :, 1], torch.ones(2, 8))     # -inf sink: plain softmax
