"""The v2 validator (contracts/v2.py): every violation names the argument, the expectation
and the value; ignored lanes may hold anything."""

import pytest
import torch

from sparse_attn_conformance.contracts.v2 import (
    INT32_MAX,
    ContractError,
    cmp_bound,
    live_lanes,
    validate,
)


def valid_kwargs(B=2, S=2, H=2, D=8, WIN=4, IDX_TOPK=2, BLOCK=2, ratio=4):
    T = B * S
    return dict(
        q=torch.zeros(T, H, D, dtype=torch.bfloat16),
        ori_kv=torch.zeros(3, BLOCK, D, dtype=torch.bfloat16),
        window_swa_indices=torch.tensor([[0, 1, -1, -1]] * T, dtype=torch.int32)[:, :WIN],
        cmp_kv=torch.zeros(2, BLOCK, D, dtype=torch.bfloat16),
        cmp_block_table=torch.tensor([[1, 0]] * B, dtype=torch.int32),
        idx_topk=torch.tensor([[0, 3, 99]] * T, dtype=torch.int32),
        position_ids=torch.full((T, 1), 19, dtype=torch.int32),
        attn_sink=torch.zeros(H), softmax_scale=0.5, seq_per_batch=S, index_topk=IDX_TOPK,
        compress_ratio=ratio)


def test_valid_inputs_pass_and_the_unread_column_is_not_checked():
    inputs = validate(**valid_kwargs())
    assert (inputs.T, inputs.B, inputs.S, inputs.WIN, inputs.IDX_TOPK, inputs.L) == (4, 2, 2, 4, 2, 3)
    live_w, live_c = live_lanes(inputs)
    assert live_w[0].tolist() == [True, True, False, False] and live_c[0].tolist() == [True, True]


@pytest.mark.parametrize("change, message", [
    (dict(q=torch.zeros(4, 2, 8)), r"q: expected dtype torch.bfloat16, got torch.float32"),
    (dict(q=torch.zeros(2, 2, 2, 8, dtype=torch.bfloat16)), r"q: expected 3 dimensions"),
    (dict(seq_per_batch=3), r"seq_per_batch: expected a divisor of T=4 \(T = B \* S\), got 3"),
    (dict(seq_per_batch=0), r"seq_per_batch: expected an int >= 1, got 0"),
    (dict(index_topk=4), r"idx_topk: expected shape \[T=4, L >= index_topk=4\], got shape \(4, 3\)"),
    (dict(compress_ratio=0), r"compress_ratio: expected an int >= 1, or None"),
    (dict(compress_ratio=True), r"compress_ratio: expected an int >= 1, or None"),
    (dict(softmax_scale=float("nan")), r"softmax_scale: expected a finite python float"),
    (dict(window_swa_indices=torch.zeros(4, 4, dtype=torch.int64)),
     r"window_swa_indices: expected dtype torch.int32"),
    (dict(window_swa_indices=torch.zeros(3, 4, dtype=torch.int32)),
     r"window_swa_indices: expected shape \[T=4, WIN >= 1\]"),
    (dict(window_swa_indices=torch.tensor([[0, 6, -1, -1]] * 4, dtype=torch.int32)),
     r"window_swa_indices\[0, 1\]: expected a flat row of ori_kv in \[0, N_ori \* BLOCK = 6\) or a "
     r"negative \(empty\) lane, got 6"),
    (dict(cmp_block_table=torch.zeros(3, 2, dtype=torch.int32)),
     r"cmp_block_table: expected shape \[B=2, M >= 1\]"),
    (dict(position_ids=torch.full((4,), 15, dtype=torch.int32)),
     r"position_ids: expected 2 dimensions"),
    (dict(position_ids=torch.tensor([[15], [15], [-1], [15]], dtype=torch.int32)),
     r"position_ids: expected every position >= 0, got -1 at token 2"),
    (dict(idx_topk=torch.tensor([[0, 3, 99], [0, 3, 99], [4, 3, 99], [0, 3, 99]], dtype=torch.int32)),
     r"idx_topk\[2, 0\]: expected a live compressed slot inside cmp_block_table's 2 columns "
     r"\(slot < 4\), got slot 4 \(position 19, compress_ratio 4\)"),
    (dict(cmp_block_table=torch.tensor([[1, 0], [1, 7]], dtype=torch.int32)),
     r"cmp_block_table\[1, 1\]: expected a block id in \[0, 2\) for live compressed slot 3 of "
     r"token 2, got 7"),
    (dict(attn_sink=torch.tensor([0.0, float("nan")])), r"attn_sink: expected no NaN"),
])
def test_violations_are_named(change, message):
    with pytest.raises(ContractError, match=message):
        validate(**{**valid_kwargs(), **change})


def test_missing_or_extra_arguments_are_named():
    kw = valid_kwargs()
    del kw["position_ids"]
    with pytest.raises(ContractError, match=r"arguments: expected exactly .* missing \['position_ids'\]"):
        validate(**kw, seqused_kv=torch.zeros(2, dtype=torch.int32))


def test_ignored_lanes_may_hold_anything():
    # negative window lanes, ids at and past the cut, anything in unread columns: no error,
    # even where the id would address past the table
    kw = valid_kwargs()
    kw["window_swa_indices"] = torch.tensor([[-(2**31), -2, 0, -1]] * 4, dtype=torch.int32)
    bound = int(cmp_bound(kw["position_ids"], 4)[0])  # (19 + 1) // 4 = 5
    kw["idx_topk"] = torch.tensor([[bound, INT32_MAX, -(2**31)]] * 4, dtype=torch.int32)
    inputs = validate(**kw)
    assert not live_lanes(inputs)[1].any()


def test_the_cut_is_exact_in_integers_at_the_edge_of_int32():
    pos = torch.tensor([[INT32_MAX], [INT32_MAX - 1], [0], [2]], dtype=torch.int32)
    assert cmp_bound(pos, 1).tolist() == [2**31, 2**31 - 1, 1, 3]
    assert cmp_bound(pos, 4).tolist() == [2**29, (2**31 - 1) // 4, 0, 0]
    assert (cmp_bound(pos, None) > INT32_MAX).all()  # no cut: every id >= 0 passes


def test_validating_and_gathering_follow_the_entries_read_not_the_table_size():
    """An expanded [70000, 70000] cmp_block_table (stride 0: 4 bytes of storage) is 39 GB
    as int64; the validator and the front end index it before widening, so a call that
    reads one entry per token needs no more memory than that (a 2 GiB address-space limit
    in a child process makes a full copy fail)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import resource, torch
        from sparse_attn_conformance.contracts.v2 import validate
        T = 70000
        kw = dict(q=torch.zeros(T, 1, 1, dtype=torch.bfloat16),
                  ori_kv=torch.zeros(1, 1, 1, dtype=torch.bfloat16),
                  window_swa_indices=torch.full((T, 1), -1, dtype=torch.int32),
                  cmp_kv=torch.zeros(1, 1, 1, dtype=torch.bfloat16),
                  cmp_block_table=torch.zeros(1, 1, dtype=torch.int32).expand(T, T),
                  idx_topk=torch.zeros(T, 1, dtype=torch.int32),
                  position_ids=torch.full((T, 1), 5, dtype=torch.int32),
                  attn_sink=torch.zeros(1), softmax_scale=1.0, seq_per_batch=1,
                  index_topk=1, compress_ratio=4)
        resource.setrlimit(resource.RLIMIT_AS, (2**31, 2**31))
        att = validate(**kw).attended()
        assert bool(att.live[:, 1].all())
        print("ok")
    """)
    # the limit is set after torch's import (its libraries map more than 2 GiB of space)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]
