"""The v1 -> v2 mapping (docs/contract.md section 11): every v1 call maps onto a valid v2
call whose tokens attend the same live multiset, so the two references agree."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from sparse_attn_conformance.contracts import v1, v2
from sparse_attn_conformance.contracts.checks import ContractError
from sparse_attn_conformance.contracts.v1_to_v2 import to_v2
from sparse_attn_conformance.kernels.torch import reference
from sparse_attn_conformance.strategies.v1.cases import cases
from tests.test_contract_validation import valid_kwargs

#: Bound on |o_v2 - o_v1| per live row, relative to the token's largest live value. The two
#: references sum the same terms in another lane order (v2 puts window lanes first), and a
#: reordered fp32 sum of n terms may differ by about n units of 2**-24 (4097 one-hot rows
#: gave 1.01e-6): not bitwise, but far below any tolerance (2**-8 relative).
REL_PER_ROW = 2**-22


def live_multisets(att) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per token (flattened), its live rows as a multiset: distinct rows (sorted) and counts."""
    rows = att.rows.reshape(-1, *att.rows.shape[-2:])
    live = att.live.reshape(-1, att.live.shape[-1])
    return [torch.unique(r[m].float(), dim=0, return_counts=True) for r, m in zip(rows, live, strict=True)]


def assert_same_call(inputs: v1.Inputs, mapped: v2.Inputs):
    B, S, H, D = inputs.q.shape
    T = B * S
    assert (mapped.T, mapped.S, mapped.WIN, mapped.IDX_TOPK) == (T, S, inputs.TOPK, inputs.TOPK)
    # the mapped call passes the v2 validator as a kernel would receive it
    v2.validate(**mapped.kwargs())

    for (r1, n1), (r2, n2) in zip(live_multisets(inputs.attended()), live_multisets(mapped.attended()),
                                  strict=True):
        assert torch.equal(r1, r2) and torch.equal(n1, n2)

    o1 = reference.sparse_attn(**inputs.kwargs()).reshape(T, H, D)
    o2 = reference.sparse_attn_v2(**mapped.kwargs())
    rows, live = v1.gather_rows(inputs)
    vmax = torch.where(live[..., None], rows.float().abs(), 0).amax(dim=(-1, -2)).reshape(T, 1, 1)
    n_live = live.sum(-1).reshape(T, 1, 1).clamp(min=1)
    assert bool(((o2 - o1).abs() <= REL_PER_ROW * n_live * vmax).all()), float((o2 - o1).abs().max())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(budget=2**20))
def test_mapped_call_attends_the_same_multiset_and_gives_the_same_output(case):
    # a ratio of 1 or the model's 4: the positions scale with it, the live set must not
    for r in (1, 4):
        try:
            mapped = to_v2(case.inputs, compress_ratio=r)
        except ContractError as exc:
            # an edge case's compressed length past INT32_MAX / r has no int32 position in
            # v2: the mapping must say so, naming the ratio (and only for such a case)
            assert case.edge is not None and "compress_ratio" in str(exc), exc
            continue
        assert_same_call(case.inputs, mapped)


def test_hand_built_call_maps_entry_by_entry():
    # B=1, S=2, WIN=4, IDX_TOPK=2, BLOCK=2: window slots 0-1 in block 3, 2-3 in block 1
    kw = valid_kwargs(B=1, S=2, H=1, D=8, WIN=4, IDX_TOPK=2, BLOCK=2)
    kw["ori_kv"] = torch.arange(4 * 2 * 8, dtype=torch.bfloat16).reshape(4, 2, 8)
    kw["ori_block_table"] = torch.tensor([[3, 1]], dtype=torch.int32)
    kw["cmp_kv"] = torch.arange(2 * 2 * 8, dtype=torch.bfloat16).reshape(2, 2, 8) / 64
    kw["cmp_block_table"] = torch.tensor([[1, 0]], dtype=torch.int32)
    kw["q"] = torch.randn(1, 2, 1, 8, generator=torch.Generator().manual_seed(0)).bfloat16()
    # seqused_kv = 6: token 0 has (window_valid, cmp_valid) = (4, 1), token 1 (4, 2)
    kw["seqused_kv"] = torch.tensor([6], dtype=torch.int32)
    kw["topk_idxs"] = torch.tensor([[[5, 2, -1, 4, 2, 9],      # 5 dead for token 0; 9 dead
                                     [3, 5, 4, -7, 0, 4]]], dtype=torch.int32)
    inputs = v1.validate(**kw)
    mapped = to_v2(inputs, compress_ratio=4)
    # window slot 2 -> block 1 row 0 = flat 2; slot 3 -> flat 3; slot 0 -> block 3 row 0 = 6
    assert mapped.window_swa_indices.tolist() == [[2, 2, -1, -1, -1, -1], [3, 6, -1, -1, -1, -1]]
    assert mapped.idx_topk.tolist() == [[0, -1, -1, -1, -1, -1], [1, 0, 0, -1, -1, -1]]
    # r * cmp_valid - 1: the cut floor((pos + 1) / 4) is cmp_valid, 1 and 2
    assert mapped.position_ids.tolist() == [[3], [7]]
    assert v2.cmp_bound(mapped.position_ids, 4).tolist() == [1, 2]
    assert_same_call(inputs, mapped)


def test_positions_reproduce_cmp_valid_as_the_cut():
    kw = valid_kwargs(B=2, S=3, WIN=4, IDX_TOPK=2, BLOCK=2)
    kw["seqused_kv"] = torch.tensor([1, 7], dtype=torch.int32)
    kw["cmp_block_table"] = torch.tensor([[0, 1], [1, 0]], dtype=torch.int32)
    mapped = to_v2(v1.validate(**kw), compress_ratio=3)
    _, _, cmp_valid = v1.derived_lengths(kw["seqused_kv"], 3, 4)
    assert cmp_valid.tolist() == [[0, 0, 0], [1, 2, 3]]
    # cmp_valid = 0 has no position -1: position 0, and nothing compressed is listed anyway
    assert mapped.position_ids.reshape(-1).tolist() == [0, 0, 0, 2, 5, 8]
    assert v2.cmp_bound(mapped.position_ids, 3).tolist() == [0, 0, 0, 1, 2, 3]


@pytest.mark.parametrize("ratio, message", [
    (0, r"compress_ratio: expected an int >= 1 .*got 0"),
    (-4, r"compress_ratio: expected an int >= 1 .*got -4"),
    (None, r"compress_ratio: expected an int >= 1 .*got None"),
    (True, r"compress_ratio: expected an int >= 1 .*got True"),
    (4.0, r"compress_ratio: expected an int >= 1 .*got 4.0"),
    # cmp_valid = 1 for the last token: position r - 1 passes int32 for r = 2**31 + 1
    (2**31 + 1, r"compress_ratio: expected r \* cmp_valid - 1 <= 2147483647 .*r=2147483649"),
])
def test_bad_compress_ratio_is_named(ratio, message):
    inputs = v1.validate(**valid_kwargs())
    with pytest.raises(ContractError, match=message):
        to_v2(inputs, compress_ratio=ratio)


def test_largest_int32_position_is_accepted():
    inputs = v1.validate(**valid_kwargs())  # seqused_kv = 5, WIN = 4: cmp_valid at most 1
    mapped = to_v2(inputs, compress_ratio=2**31)
    assert int(mapped.position_ids.max()) == 2**31 - 1
    assert v2.cmp_bound(mapped.position_ids, 2**31).tolist() == [0, 1, 0, 1]


def test_not_a_v1_call_is_named():
    with pytest.raises(ContractError, match=r"to_v2: expected a contracts.v1.Inputs, got dict"):
        to_v2(valid_kwargs())
    broken = v1.validate(**valid_kwargs()).replace(seqused_kv=torch.tensor([5, -1], dtype=torch.int32))
    with pytest.raises(ContractError, match=r"seqused_kv: expected every entry >= 0"):
        to_v2(broken)
