"""Non-contiguous arguments: contracts/layout.py, `Inputs.layout`, strategies/layouts.py, and the
correct kernels giving the same bits whatever the layout."""

import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from sparse_attn_conformance.contracts.layout import (
    KINDS,
    applicable_kinds,
    constant_dims,
    present,
    why_not,
)
from sparse_attn_conformance.contracts.v1 import (
    ARGUMENTS,
    ContractError,
    Inputs,
    live_mask,
    validate,
)
from sparse_attn_conformance.kernels.pypto import kernel as pypto_kernel
from sparse_attn_conformance.kernels.torch import positional, reference, tiled
from sparse_attn_conformance.strategies.layouts import laid_out, layouts

TENSORS = ARGUMENTS[:-2]
DTYPES = (torch.bfloat16, torch.float32, torch.int32)
SHAPES = ((1,), (5,), (1, 1), (3, 1), (1, 4), (2, 3), (2, 1, 3), (1, 1, 1), (2, 3, 4),
          (3, 1, 1, 2), (1, 2, 1, 3), (2, 3, 4, 5), (1, 1, 1, 1))


def bits(t: torch.Tensor) -> torch.Tensor:
    """Bitwise view: NaN equals NaN, -0.0 differs from 0.0."""
    if t.dtype.is_floating_point:
        return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])
    return t


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(bits(a), bits(b))


def sample(shape, dtype, seed=0, constant_dim=None):
    g = torch.Generator().manual_seed(seed)
    if constant_dim is not None:
        shape1 = list(shape)
        shape1[constant_dim] = 1
        return sample(shape1, dtype, seed).expand(shape).clone()
    t = torch.randn(shape, generator=g) * 100
    t = t.to(dtype)
    if dtype.is_floating_point and t.numel() > 2:
        t.view(-1)[0], t.view(-1)[-1] = float("nan"), -0.0
    return t


def claim_holds(out: torch.Tensor, kind: str) -> bool:
    if kind == "offset":
        return out.is_contiguous() and out.storage_offset() != 0
    if kind == "expanded":
        return not out.is_contiguous() and 0 in out.stride()
    return not out.is_contiguous()


# -- contracts/layout.py ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("constant", (False, True))
def test_present_keeps_values_and_breaks_contiguity(dtype, shape, constant):
    big = [d for d, n in enumerate(shape) if n > 1]
    t = sample(shape, dtype, constant_dim=big[0] if constant and big else None)
    kinds = applicable_kinds(t)
    assert kinds[:2] == ("contiguous", "offset")
    assert ("strided" in kinds) == (t.numel() > 1)
    assert ("transposed" in kinds) == (len(big) >= 2)
    assert ("column_major" in kinds) == (len(big) >= 3)
    assert ("expanded" in kinds) == (constant and bool(big))
    for kind in kinds:
        for gen in (None, random.Random(1), random.Random(2)):
            out = present(t, kind, gen)
            assert same_bits(out, t), (kind, out)
            assert out.untyped_storage().data_ptr() != t.untyped_storage().data_ptr()
            if kind == "contiguous":
                assert out.is_contiguous() and out.storage_offset() == 0
            else:
                assert claim_holds(out, kind), (kind, out.stride(), out.storage_offset())


def test_inapplicable_or_unknown_kind_is_refused_by_name():
    seqused = torch.tensor([3, 4], dtype=torch.int32)
    with pytest.raises(ValueError, match=r"seqused_kv: layout 'transposed' does not apply"):
        present(seqused, "transposed", name="seqused_kv")
    with pytest.raises(ValueError, match=r"seqused_kv: layout 'expanded' does not apply: .*"
                                         r"not constant"):
        present(seqused, "expanded", name="seqused_kv")
    with pytest.raises(ValueError, match=r"q: layout 'strided' does not apply: .*one element"):
        present(torch.zeros(1, 1, 1, 1, dtype=torch.bfloat16), "strided", name="q")
    with pytest.raises(ValueError, match=r"unknown layout kind 'sideways'"):
        present(seqused, "sideways")
    assert why_not(seqused, "offset") is None


def test_expanded_is_bitwise_constant_only():
    t = torch.tensor([[1.0, float("nan")], [1.0, float("nan")]])
    assert constant_dims(t) == [0]
    assert present(t, "expanded").stride() == (0, 1)
    assert constant_dims(torch.tensor([0.0, -0.0])) == []
    assert present(torch.ones(2, 3, dtype=torch.int32), "expanded").stride() == (0, 0)


def test_gaps_hold_poison():
    t = torch.arange(6, dtype=torch.int32).reshape(2, 3)
    out = present(t, "strided")
    gaps = out.as_strided((2, 3), out.stride(), out.storage_offset() + 1)
    assert not torch.equal(gaps, t)
    f = present(t.float(), "offset")
    assert torch.isnan(f.as_strided((1,), (1,), 0)).all()


# -- Inputs.layout ----------------------------------------------------------------------------

def make_inputs(B=2, S=3, H=4, D=16, WIN=8, IDX_TOPK=6, BLOCK=4, seed=0, shared=False,
                canonical=False):
    """Valid inputs with live window and compressed entries, pads and garbage. `shared`:
    every tensor constant along some dimension (a query shared by heads, one index row per
    batch, equal lengths, sinks and block tables), so that ``expanded`` applies.
    `canonical`: index rows as the model writes them (HCA order), for `positional`."""
    g = torch.Generator().manual_seed(seed)
    nwb, M = -(-WIN // BLOCK), 3
    n_ori, n_cmp = B * nwb + 1, B * M + 1
    ori_bt = torch.randperm(n_ori, generator=g)[:B * nwb].reshape(B, nwb).int()
    cmp_bt = torch.randperm(n_cmp, generator=g)[:B * M].reshape(B, M).int()
    seqused = torch.randint(0, WIN + M * BLOCK + 1, (B,), generator=g).int()
    rows = []
    for _ in range(B * S):
        w = torch.randperm(WIN, generator=g)
        w[torch.rand(WIN, generator=g) < 0.2] = -1
        c = WIN + torch.randint(0, M * BLOCK, (IDX_TOPK,), generator=g)
        c[torch.rand(IDX_TOPK, generator=g) < 0.2] = 10 ** 6
        rows.append(torch.cat([w, c])[torch.randperm(WIN + IDX_TOPK, generator=g)])
    topk = torch.stack(rows).reshape(B, S, -1).int()
    if canonical:
        seqused = WIN + torch.randint(0, min(IDX_TOPK, M * BLOCK) + 1, (B,), generator=g).int()
        for b in range(B):
            k = int(seqused[b]) - WIN
            topk[b] = torch.cat([torch.arange(WIN + k), torch.full((IDX_TOPK - k,), -1)]).int()
    q = torch.randn(B, S, H, D, generator=g).bfloat16()
    sink = torch.randn(H, generator=g)
    sink[0] = float("-inf")
    if shared:
        q = q[:, :, :1].expand(B, S, H, D).clone()
        topk = topk[:, :1].expand_as(topk).clone()
        seqused = seqused[:1].expand(B).clone()
        sink = sink[:1].expand(H).clone()
        ori_bt = ori_bt[:1].expand(B, nwb).clone()
        cmp_bt = cmp_bt[:1].expand(B, M).clone()
    return validate(
        q=q, ori_kv=torch.randn(n_ori, BLOCK, D, generator=g).bfloat16(), ori_block_table=ori_bt,
        cmp_kv=torch.randn(n_cmp, BLOCK, D, generator=g).bfloat16(), cmp_block_table=cmp_bt,
        topk_idxs=topk, attn_sink=sink, seqused_kv=seqused, softmax_scale=1 / math.sqrt(D),
        window_size=WIN)


def test_default_layout_is_contiguous_and_kwargs_are_fresh():
    inputs = make_inputs()
    assert inputs.layout == {}
    kw = inputs.kwargs()
    assert tuple(kw) == ARGUMENTS
    for name in TENSORS:
        assert kw[name].is_contiguous() and kw[name].storage_offset() == 0
        assert same_bits(kw[name], getattr(inputs, name))
        assert kw[name].data_ptr() != getattr(inputs, name).data_ptr()


def test_kwargs_present_the_layout_in_fresh_buffers():
    inputs = make_inputs(shared=True)
    layout = {"q": "transposed", "ori_kv": "offset", "cmp_kv": "column_major",
              "topk_idxs": "expanded", "seqused_kv": "strided", "attn_sink": "contiguous"}
    laid = inputs.replace(layout=layout)
    assert "attn_sink" not in laid.layout                  # contiguous entries are dropped
    assert laid.layout == {a: layout[a] for a in ARGUMENTS if layout.get(a, "contiguous")
                           != "contiguous"}
    assert "non-contiguous, q: transposed, ori_kv: offset" in repr(laid)
    assert "non-contiguous" not in repr(inputs)
    kw1, kw2 = laid.kwargs(), laid.kwargs()
    for name in TENSORS:
        kind = laid.layout.get(name, "contiguous")
        assert same_bits(kw1[name], getattr(inputs, name))
        assert kind == "contiguous" or claim_holds(kw1[name], kind), name
        assert kw1[name].data_ptr() != kw2[name].data_ptr()
    kw1["q"].zero_()                                        # a kernel writing in place
    assert same_bits(laid.kwargs()["q"], inputs.q)
    # validate() sees through the layout and returns the values with an empty layout
    again = validate(**kw2)
    assert again.layout == {}
    assert all(same_bits(getattr(again, a), getattr(inputs, a)) for a in TENSORS)


def test_replace_keeps_the_layout_where_it_still_applies():
    inputs = make_inputs(shared=True).replace(layout={"q": "strided", "topk_idxs": "expanded"})
    assert inputs.replace(softmax_scale=2.0).layout == inputs.layout
    row_varies = inputs.topk_idxs.clone()
    row_varies[0, 0, 0] = -7
    changed = inputs.replace(topk_idxs=row_varies)
    assert changed.layout == {"q": "strided"}
    assert inputs.replace(layout={}).layout == {}
    with pytest.raises(ContractError, match=r"Inputs.layout\['topk_idxs'\]"):
        inputs.replace(topk_idxs=row_varies, layout=inputs.layout)


@pytest.mark.parametrize("layout, message", [
    ({"softmax_scale": "offset"}, r"Inputs.layout: expected keys among the tensor arguments "
                                  r"\('q', .*\), got 'softmax_scale'"),
    ({"k": "offset"}, r"Inputs.layout: expected keys among .* got 'k'"),
    ({"q": "diagonal"}, r"Inputs.layout\['q'\]: expected a layout kind among \('contiguous', "
                        r".*\), got 'diagonal'"),
    ({"seqused_kv": "transposed"}, r"Inputs.layout\['seqused_kv'\]: expected a kind that applies "
                                   r"to seqused_kv, got 'transposed': fewer than two"),
    ({"q": "expanded"}, r"Inputs.layout\['q'\]: .* got 'expanded': its values are not constant"),
    (["q"], r"Inputs.layout: expected a mapping from argument name to layout kind, got list"),
])
def test_bad_layout_is_named(layout, message):
    inputs = make_inputs()
    with pytest.raises(ContractError, match=message):
        inputs.replace(layout=layout)


# -- the correct kernels handle every layout --------------------------------------------------

KERNELS = {"reference": reference.sparse_attn, "tiled": tiled.sparse_attn,
           "positional": positional.sparse_attn}
CONFIGS = {
    "mixed": dict(),
    "shared": dict(shared=True, seed=1),
    "single": dict(B=1, S=1, H=1, D=8, WIN=3, IDX_TOPK=2, BLOCK=2, seed=2),
    "long-rows": dict(B=3, S=2, H=3, D=17, WIN=32, IDX_TOPK=20, BLOCK=5, seed=3, shared=True),
    "canonical": dict(B=3, S=2, H=4, D=16, WIN=8, IDX_TOPK=6, BLOCK=4, seed=6, canonical=True),
    "canonical-shared": dict(B=2, S=4, H=3, D=9, WIN=4, IDX_TOPK=3, BLOCK=3, seed=7,
                             canonical=True, shared=True),
    "wide": dict(B=1, S=3, H=3, D=512, WIN=128, IDX_TOPK=100, BLOCK=1, seed=25),
}


def every_layout(inputs: Inputs):
    """Each argument in each kind that applies to it, one at a time, then all at once."""
    out = [{a: k} for a in TENSORS for k in applicable_kinds(getattr(inputs, a))[1:]]
    rnd = random.Random(0)
    out += [{a: rnd.choice(applicable_kinds(getattr(inputs, a))[1:]) for a in TENSORS}
            for _ in range(3)]
    return out


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_kernels_give_the_same_bits_on_every_layout(config):
    inputs = make_inputs(**CONFIGS[config])
    assert any(live_mask(inputs.topk_idxs, inputs.seqused_kv, inputs.window_size)
               .flatten()) or config == "single"
    kernels = {n: k for n, k in KERNELS.items()
               if n != "positional" or CONFIGS[config].get("canonical")}  # canonical rows only
    base = {name: k(**inputs.kwargs()) for name, k in kernels.items()}
    dims, arrays = pypto_kernel.plan(validate(**inputs.kwargs()))
    kinds_seen = set()
    for layout in every_layout(inputs):
        laid = inputs.replace(layout=layout)
        kinds_seen.update(laid.layout.values())
        for name, kernel in kernels.items():
            assert same_bits(kernel(**laid.kwargs()), base[name]), (name, layout)
        dims2, arrays2 = pypto_kernel.plan(validate(**laid.kwargs()))
        assert dims2 == dims, layout
        for i, (a, b) in enumerate(zip(arrays, arrays2, strict=True)):
            assert same_bits(a, b) and a.stride() == b.stride(), (i, layout)
    if CONFIGS[config].get("shared"):
        assert kinds_seen == set(KINDS) - {"contiguous"}


def test_tiled_gives_the_same_bits_on_a_transposed_query():
    """torch's matmul rounds differently on transposed strides: tiled copies q row-major."""
    inputs = make_inputs(**CONFIGS["wide"])
    base = tiled.sparse_attn(**inputs.kwargs())
    assert same_bits(tiled.sparse_attn(**inputs.replace(layout={"q": "transposed"}).kwargs()),
                     base)


# -- strategies/layouts.py --------------------------------------------------------------------

SHARED = make_inputs(shared=True, seed=4)


@settings(max_examples=150, deadline=None, database=None)
@given(layouts(SHARED))
def test_drawn_layouts_apply(layout):
    SHARED.replace(layout=layout).kwargs()      # raises if a kind did not apply
    assert all(k != "contiguous" for k in layout.values())


def test_layouts_shrink_to_contiguous_and_reach_several():
    from hypothesis import find

    assert find(layouts(SHARED), lambda _: True) == {}
    one = find(layouts(SHARED), lambda lay: "topk_idxs" in lay)
    assert one == {"topk_idxs": "offset"}
    several = find(layouts(SHARED), lambda lay: len(lay) >= 3)
    assert len(several) == 3
    assert find(layouts(SHARED), lambda lay: "expanded" in lay.values())
    with pytest.raises(NoSuchExample):
        find(layouts({"seqused_kv": torch.tensor([1], dtype=torch.int32)}),
             lambda lay: lay.get("seqused_kv") not in (None, "offset"))


def test_layouts_mostly_contiguous_sometimes_several():
    counts = {0: 0, 1: 0, "more": 0}

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.data())
    def run(data):
        # stands for the case: alone, Hypothesis would not repeat the few draws giving {}
        data.draw(st.integers(0, 2 ** 62))
        lay = data.draw(layouts(SHARED, kinds=("contiguous", "strided", "expanded")))
        assert set(lay.values()) <= {"strided", "expanded"}
        counts[len(lay) if len(lay) < 2 else "more"] += 1

    run()
    assert counts[0] > counts[1] > 0 and counts["more"] > 0, counts


@settings(max_examples=20, deadline=None, database=None)
@given(laid_out(make_inputs(seed=5)))
def test_laid_out_inputs_keep_values(inputs):
    ref = make_inputs(seed=5)
    kw = inputs.kwargs()
    assert all(same_bits(kw[a], getattr(ref, a)) for a in TENSORS)
