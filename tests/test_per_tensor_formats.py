"""The per-tensor FP8 formats (contracts/formats.py, docs/contract.md section 12): pools of
float8_e4m3fn (`fp8_e4m3`) or float8_e4m3fnuz (`fp8_e4m3fnuz`) codes, each with one float32
scale passed as its own argument (`ori_kv_scale`, `cmp_kv_scale`).

A row's value is each code's exact value times its pool's scale; the validators demand the
scales exactly when the pools are such, and name every bad one; the strategies draw valid
calls whose unread rows are poisoned and whose two pools have their own scales; a case drawn
at another's config (to be mixed with it) shares that case's scales."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparse_attn_conformance.contracts import ContractError, Preconditions, formats, v1, v2
from sparse_attn_conformance.contracts.v1_to_v2 import to_v2
from sparse_attn_conformance.kernels.faulty.fp8 import BUGS, dequantise_per_tensor
from sparse_attn_conformance.kernels.torch.reference import sparse_attn, sparse_attn_v2
from sparse_attn_conformance.strategies.formats import in_format, special_codes
from sparse_attn_conformance.strategies.v1 import cases as v1_cases
from sparse_attn_conformance.strategies.v2 import cases as v2_cases
from tests.test_v1_to_v2 import assert_same_call

NAMES = list(formats.PER_TENSOR)
CODES = torch.arange(256, dtype=torch.uint8)
#: a subnormal float32, a scale that is no power of two, and a huge one
SCALES = (2.0**-149, 0.3, 3.0e38)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", SCALES)
def test_every_code_decodes_to_its_value_times_the_scale(name, scale):
    pt = formats.PER_TENSOR[name]
    s = float(torch.tensor(scale, dtype=torch.float32))  # the scale as the call holds it
    got = formats.values(CODES.view(pt.dtype)[None], torch.tensor(s, dtype=torch.float64))[0]
    want = CODES.view(pt.dtype).double() * s
    assert torch.equal(got.isnan(), torch.isin(CODES, torch.tensor(pt.nan_codes)))
    assert torch.equal(got.nan_to_num(7.0), want.nan_to_num(7.0))
    # the table of values the contract states: e4m3fn's largest 448, e4m3fnuz's 240 (bias 8)
    assert float(pt.values(torch.tensor([pt.largest], dtype=torch.uint8))) == pt.max
    assert {"fp8_e4m3": 448.0, "fp8_e4m3fnuz": 240.0}[name] == pt.max


def test_rows_of_a_per_tensor_pool_need_their_scale():
    with pytest.raises(ContractError, match="rows of format fp8_e4m3 need their pool's scale"):
        formats.values(torch.zeros(2, 4, dtype=torch.float8_e4m3fn))


def _v2_call(name: str, ori_scale: float, cmp_scale: float) -> dict:
    """Token 0 reads window row 0 (all codes 1.0) and compressed slot 0 (all codes 2.0) of
    pools in format `name`, q = 0 and the sink -inf: its output is the mean of the two
    rows' values."""
    dtype = formats.PER_TENSOR[name].dtype
    D = 4
    ori = torch.full((2, 2, D), 1.0).to(dtype)
    cmp = torch.full((2, 2, D), 2.0).to(dtype)
    return dict(q=torch.zeros(1, 1, D, dtype=torch.bfloat16), ori_kv=ori,
                window_swa_indices=torch.tensor([[0]], dtype=torch.int32), cmp_kv=cmp,
                cmp_block_table=torch.tensor([[1]], dtype=torch.int32),
                idx_topk=torch.tensor([[0]], dtype=torch.int32),
                position_ids=torch.tensor([[7]], dtype=torch.int32),
                attn_sink=torch.tensor([float("-inf")]), softmax_scale=1.0, seq_per_batch=1,
                index_topk=1, compress_ratio=4,
                ori_kv_scale=torch.tensor([ori_scale]), cmp_kv_scale=torch.tensor([cmp_scale]))


@pytest.mark.parametrize("name", NAMES)
def test_reference_reads_each_pool_with_its_own_scale(name):
    kw = _v2_call(name, 0.5, 3.0)
    i = v2.validate(**kw)
    assert i.kv_format == name and i.D_v == 4
    assert i.call_arguments()[-2:] == formats.SCALE_ARGUMENTS
    assert set(i.kwargs()) == set(kw)
    o = sparse_attn_v2(**kw)
    assert torch.equal(o, torch.full((1, 1, 4), (1.0 * 0.5 + 2.0 * 3.0) / 2))


def _errors(name: str) -> list[tuple[str, dict, str]]:
    call = _v2_call(name, 0.5, 3.0)
    no_scale = {k: v for k, v in call.items() if k != "cmp_kv_scale"}
    bf16 = {**call, "ori_kv": torch.zeros(2, 2, 4, dtype=torch.bfloat16),
            "cmp_kv": torch.zeros(2, 2, 4, dtype=torch.bfloat16)}
    return [
        ("a scale missing", no_scale,
         r"arguments: expected exactly .*'ori_kv_scale', 'cmp_kv_scale'\) \(the pools are "
         r"per-tensor FP8: each takes its scale\), got missing \['cmp_kv_scale'\]"),
        ("scales beside bf16 pools", bf16,
         r"arguments: expected exactly .* \(scales belong to per-tensor FP8 pools only\), got "
         r"missing \[\], unexpected \['ori_kv_scale', 'cmp_kv_scale'\]"),
        ("a python float", {**call, "ori_kv_scale": 0.5},
         r"ori_kv_scale: expected a torch.Tensor \(float32, shape \[1\]\), got float"),
        ("float64", {**call, "ori_kv_scale": torch.tensor([0.5], dtype=torch.float64)},
         r"ori_kv_scale: expected a float32 tensor of shape \[1\], got torch.float64 of shape "
         r"\(1,\)"),
        ("a 0-d scale", {**call, "cmp_kv_scale": torch.tensor(0.5)},
         r"cmp_kv_scale: expected a float32 tensor of shape \[1\], got torch.float32 of shape \(\)"),
        ("two scales", {**call, "cmp_kv_scale": torch.tensor([0.5, 1.0])},
         r"cmp_kv_scale: expected .* shape \[1\], got torch.float32 of shape \(2,\)"),
        ("zero", {**call, "ori_kv_scale": torch.tensor([0.0])},
         r"ori_kv_scale: expected a finite scale > 0, got 0.0"),
        ("negative", {**call, "ori_kv_scale": torch.tensor([-2.0])},
         r"ori_kv_scale: expected a finite scale > 0, got -2.0"),
        ("inf", {**call, "cmp_kv_scale": torch.tensor([float("inf")])},
         r"cmp_kv_scale: expected a finite scale > 0, got inf"),
        ("nan", {**call, "cmp_kv_scale": torch.tensor([float("nan")])},
         r"cmp_kv_scale: expected a finite scale > 0, got nan"),
        ("the other dtype for cmp_kv", {**call, "cmp_kv": call["cmp_kv"].float().to(
            torch.float8_e4m3fnuz if name == "fp8_e4m3" else torch.float8_e4m3fn)},
         r"cmp_kv: expected the cache format of ori_kv \(" + name + r"\), got format fp8_e4m3"),
    ]


@pytest.mark.parametrize("name", NAMES)
def test_bad_scales_are_named(name):
    for what, kw, message in _errors(name):
        with pytest.raises(ContractError, match=message) as info:
            v2.validate(**kw)
        argument = message.split(":")[0]
        assert str(info.value).startswith(f"{argument}: expected "), (what, str(info.value))


def test_poisoned_per_tensor_pool_keeps_its_read_rows_and_poisons_the_rest():
    for name, pt in formats.PER_TENSOR.items():
        pool = torch.randn(3, 4, 6).to(pt.dtype)
        keep = torch.rand(3, 4, generator=torch.Generator().manual_seed(1)) < 0.5
        out = formats.poison_pool(pool, keep)
        assert out.dtype == pt.dtype and out.shape == pool.shape
        codes, before = out.view(torch.uint8), pool.view(torch.uint8)
        assert torch.equal(codes[keep], before[keep])
        nan = torch.isin(codes[~keep], torch.tensor(pt.nan_codes, dtype=torch.uint8))
        largest = (codes[~keep] & 0x7F) == pt.largest
        # every unread row holds a NaN code or the largest magnitudes
        assert bool((nan | largest).any(dim=-1).all()), name


def test_special_codes_are_the_edges_of_each_dtype():
    fn = formats.PER_TENSOR["fp8_e4m3"]
    assert set(fn.values(special_codes(fn)).tolist()) >= {0.0, 2.0**-9, 448.0, -448.0, 1.0,
                                                          2.0**-6, 416.0}
    fnuz = formats.PER_TENSOR["fp8_e4m3fnuz"]
    got = special_codes(fnuz)
    assert 0x80 not in got.tolist()  # fnuz's NaN, not a value
    assert set(fnuz.values(got).tolist()) >= {0.0, 2.0**-10, 240.0, -240.0, 2.0**-7}


SOME = settings(max_examples=24, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("convention", ["v1", "v2"])
def test_drawn_calls_are_valid_with_poisoned_unread_rows(convention):
    front = v1 if convention == "v1" else v2
    cases = v1_cases.cases if convention == "v1" else v2_cases.cases
    seen = {"regimes": set(), "formats": set(), "scales differ": 0, "not a power of two": 0}

    @SOME
    @given(data=st.data())
    def drawn(data):
        name = data.draw(st.sampled_from(NAMES))
        case = data.draw(in_format(data.draw(cases(Preconditions())), name))
        i = front.validate(**case.inputs.kwargs())
        assert i.kv_format == case.kv_format == name
        pt = formats.PER_TENSOR[name]
        keep_ori, keep_cmp = front.addressed_rows(i)
        for pool, keep in ((i.ori_kv, keep_ori), (i.cmp_kv, keep_cmp)):
            codes = pool.view(torch.uint8)
            nan = torch.isin(codes, torch.tensor(pt.nan_codes, dtype=torch.uint8))
            assert not bool(nan[keep].any()), "a read row holds a NaN code"
            unread = codes[~keep]
            assert bool((torch.isin(unread, torch.tensor(pt.nan_codes, dtype=torch.uint8))
                         | ((unread & 0x7F) == pt.largest)).any(dim=-1).all())
        ori, cmp = float(i.ori_kv_scale), float(i.cmp_kv_scale)
        seen["regimes"].add(case.fp8_regime)
        seen["formats"].add(name)
        seen["scales differ"] += ori != cmp
        seen["not a power of two"] += any(torch.frexp(torch.tensor(s)).mantissa != 0.5
                                          for s in (ori, cmp))
        out = (sparse_attn if convention == "v1" else sparse_attn_v2)(**i.kwargs())
        assert bool(torch.isfinite(out).all())

    drawn()
    assert seen["regimes"] == {"quantised", "raw", "mixed"}, seen
    assert seen["formats"] == set(NAMES) and seen["scales differ"] >= 6, seen
    assert seen["not a power of two"] >= 1, seen


@settings(SOME, max_examples=8)
@given(data=st.data())
def test_a_case_at_another_cases_config_shares_its_scales(data):
    name = data.draw(st.sampled_from(NAMES))
    a = data.draw(in_format(data.draw(v1_cases.cases(Preconditions())), name))
    assert a.config.pool_scales == (float(a.inputs.ori_kv_scale), float(a.inputs.cmp_kv_scale))
    b = data.draw(v1_cases.cases(Preconditions(), config=a.config))
    b = data.draw(in_format(b, name))
    assert b.config.pool_scales == a.config.pool_scales
    assert torch.equal(b.inputs.ori_kv_scale, a.inputs.ori_kv_scale)
    assert torch.equal(b.inputs.cmp_kv_scale, a.inputs.cmp_kv_scale)


@settings(SOME, max_examples=8)
@given(data=st.data())
def test_v1_to_v2_carries_the_scales(data):
    case = data.draw(in_format(data.draw(v1_cases.cases(Preconditions())),
                               data.draw(st.sampled_from(NAMES))))
    i = case.inputs
    mapped = to_v2(i, 4)
    assert mapped.kv_format == i.kv_format
    assert torch.equal(mapped.ori_kv_scale, i.ori_kv_scale)
    assert torch.equal(mapped.cmp_kv_scale, i.cmp_kv_scale)
    # tests/test_v1_to_v2.py's check of the mapping (live rows as multisets, outputs)
    assert_same_call(i, mapped)


@pytest.mark.parametrize("name", NAMES)
def test_scaffold_decoder_is_the_contracts_and_each_bug_changes_it(name):
    pt = formats.PER_TENSOR[name]
    finite = CODES[~torch.isin(CODES, torch.tensor(pt.nan_codes, dtype=torch.uint8))]
    rows = finite.view(pt.dtype)[None]
    pool = rows[None]
    for scale in (0.75, 2.0**-20, 3.0):
        key, value = dequantise_per_tensor(pool, rows, scale)
        exact = formats.values(rows, torch.tensor(scale, dtype=torch.float64))
        assert torch.equal(key, exact.float()) and torch.equal(value, exact.float())
        for bug, (fmts, _) in BUGS.items():
            if name in fmts and bug != "pt-scales-swapped":  # that one swaps the arguments
                wrong = dequantise_per_tensor(pool, rows, scale, bug)
                assert not (torch.equal(wrong[0], key) and torch.equal(wrong[1], value)), bug


def test_scale_fields_default_to_none_for_the_other_formats():
    field = {f.name: f for f in dataclasses.fields(v2.Inputs)}
    assert field["ori_kv_scale"].default is None and field["cmp_kv_scale"].default is None
