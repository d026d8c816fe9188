"""Meta-tests of the strategies: every case is valid, honours the kernel's preconditions,
and the model paths write what contract section 4 says."""

import dataclasses

import pytest
import torch
from hypothesis import find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from sparse_attn_conformance.contracts.v1 import (
    DOMAIN_LIMIT_LOG2,
    Preconditions,
    derived_lengths,
    gather_rows,
    live_mask,
    validate,
)
from sparse_attn_conformance.strategies import edges
from sparse_attn_conformance.strategies.config import DEFAULT_BUDGET, Config, configs, cost
from sparse_attn_conformance.strategies.coverage import unexercised
from sparse_attn_conformance.strategies.edges import EDGE_COLUMNS, EDGE_COST, LAUNCH_LIMIT
from sparse_attn_conformance.strategies.lengths import model_seqused
from sparse_attn_conformance.strategies.v1.cases import cases
from sparse_attn_conformance.strategies.v1.coverage import SEED_CONFIG, V1_CORNERS, corners
from sparse_attn_conformance.strategies.v1.rows import RowRecipe, adversarial_row, canonical_row


@given(case=cases())
def test_every_case_is_a_valid_call(case):
    validate(**case.inputs.kwargs())
    c = case.config
    assert case.inputs.topk_idxs.shape == (c.B, c.S, c.WIN + c.IDX_TOPK)


@given(case=cases(adversarial=False))
def test_model_cases_follow_the_model(case):
    c, i = case.config, case.inputs
    for b, p in enumerate(case.start_pos):
        assert int(i.seqused_kv[b]) == model_seqused(c, p)
        row = i.topk_idxs[b, 0].tolist()
        assert row[: c.WIN] == list(range(c.WIN))
        assert all((i.topk_idxs[b] == i.topk_idxs[b, 0]).all(dim=-1).tolist())  # shared row
        tail = row[c.WIN:]
        n = len([e for e in tail if e != -1])
        assert tail[n:] == [-1] * (len(tail) - n)


@given(case=cases(adversarial=False, ring="unwrapped"))
def test_unwrapped_cases_keep_the_ring_unwrapped(case):
    assert all(p + case.config.S <= case.config.WIN for p in case.start_pos)


@given(case=cases(min_S=2, ring="wrapped"))
def test_wrapped_cases_wrap_the_ring(case):
    assert case.config.S >= 2 and case.start_pos[0] + case.config.S > case.config.WIN


@given(case=cases(empty_token=True))
def test_empty_token_cases_have_one(case):
    i = case.inputs
    assert (~live_mask(i.topk_idxs, i.seqused_kv, i.window_size).any(-1)).any()


@given(case=cases(Preconditions(canonical_rows=True), empty_token=True))
def test_empty_token_cases_have_one_on_canonical_rows(case):
    i = case.inputs
    assert (~live_mask(i.topk_idxs, i.seqused_kv, i.window_size).any(-1)).any()


@settings(max_examples=200)
@given(case=cases())
def test_cases_stay_within_the_budget(case):
    """Ordinary cases stay within the budget; an edge case (strategies/edges.py) within its
    own fixed bound, whatever the profile (2^16 tokens or heads cost about a second)."""
    bound = DEFAULT_BUDGET if case.edge is None else EDGE_COST
    assert cost(dataclasses.asdict(case.config)) <= bound


@settings(max_examples=50)
@given(case=cases())
def test_edge_cases_reach_their_edges(case):
    """Every edge case puts the one integer it is about at its edge, with the rest tiny."""
    c, i = case.config, case.inputs
    if case.edge is None:
        return
    assert c.H * c.D <= 2 * 4 or case.edge == "heads"
    if case.edge == "heads":
        assert c.H > LAUNCH_LIMIT and c.B * c.S <= 4
    if case.edge == "tokens":
        assert c.B * c.S > LAUNCH_LIMIT and c.H == 1
    if case.edge == "lengths":
        assert int(i.seqused_kv.max()) > 2**16 and i.cmp_block_table.shape[1] <= EDGE_COLUMNS
    if case.edge == "table":
        assert i.cmp_block_table.shape[1] > 2**12 and i.cmp_kv.shape[0] > 2**16


@settings(max_examples=200)
@given(case=cases(adversarial=True))
def test_cases_stay_in_the_numerical_domain(case):
    """contract section 5: logits' partial sums and value sums stay below 2^120."""
    _in_domain(case)


@settings(max_examples=100)
@given(data=st.data())
def test_cases_with_a_given_config_stay_in_the_numerical_domain(data):
    """A second case drawn for another's config (the independence property) keeps that
    config's scale, extreme values included."""
    first = data.draw(cases())
    _in_domain(data.draw(cases(config=first.config)))


def _in_domain(case):
    i = case.inputs
    rows, live = gather_rows(i)
    k = rows.double().abs()
    bound = torch.einsum("bshd,bstd->bsht", i.q.double().abs(), k)
    bound = bound * max(1.0, abs(i.softmax_scale))
    limit = 2.0**DOMAIN_LIMIT_LOG2
    assert float(bound.max()) <= limit if bound.numel() else True
    assert float(k.max()) * i.TOPK <= limit if k.numel() else True
    assert torch.isfinite(i.q.float()).all()


def _reaches(strategy, condition, what):
    try:
        find(strategy, condition, settings=settings(max_examples=2000, database=None))
    except NoSuchExample as exc:
        raise AssertionError(f"the strategy never drew {what}") from exc


@pytest.mark.parametrize("dim", list(SEED_CONFIG))
def test_every_dimension_goes_past_the_seed_config_and_off_tile(dim):
    _reaches(configs(), lambda c: getattr(c, dim) > SEED_CONFIG[dim]
             and getattr(c, dim) % 16 not in (0, 1), f"{dim} > {SEED_CONFIG[dim]}, off-tile")


def test_rows_fill_with_live_entries():
    def many(case):
        i = case.inputs
        return int(live_mask(i.topk_idxs, i.seqused_kv, i.window_size).sum(-1).max()) > 1500
    _reaches(cases(adversarial=True), many, "a row with more than 1500 live entries")


def test_lengths_reach_long_context():
    def long(case):
        i = case.inputs
        live = live_mask(i.topk_idxs, i.seqused_kv, i.window_size)
        return bool((live & (i.topk_idxs.long() - i.window_size >= 2**16)).any())
    _reaches(cases(adversarial=True), long, "a live compressed slot at or past 2^16")


@given(case=cases(Preconditions(max_seqused=40)))
def test_declared_max_seqused_is_honoured(case):
    assert int(case.inputs.seqused_kv.max()) <= 40


def test_declared_max_seqused_is_reached():
    _reaches(cases(Preconditions(max_seqused=40), adversarial=True),
             lambda c: int(c.inputs.seqused_kv.max()) >= 30, "lengths near the declared bound")


PRE = Preconditions(canonical_rows=True, finite_sinks=True,
                    dims={"H": (2,), "D": (16,), "WIN": (8,), "BLOCK": (4,), "S": (2,)})


@given(case=cases(PRE))
def test_preconditions_are_honoured(case):
    c, i = case.config, case.inputs
    assert (c.H, c.D, c.WIN, c.BLOCK, c.S) == (2, 16, 8, 4, 2)
    assert case.path in ("SWA", "HCA")
    assert torch.isfinite(i.attn_sink).all()
    # canonical: compressed entries in order
    for b in range(c.B):
        cmp = [e - c.WIN for e in i.topk_idxs[b, 0, c.WIN:].tolist() if e != -1]
        assert cmp == list(range(len(cmp)))


def test_model_seqused_matches_the_seed_table():
    cfg = Config(B=1, S=2, H=1, D=8, WIN=128, IDX_TOPK=512, BLOCK=128, ratio=0,
                 softmax_scale=1.0)
    assert model_seqused(cfg, 10) == 12 and model_seqused(cfg, 1000) == 128
    hca = Config(**{**cfg.__dict__, "ratio": 128})
    assert model_seqused(hca, 100) == 102                 # L <= WIN: L
    assert model_seqused(hca, 1000) == 128 + 1002 // 128  # WIN + L // r
    csa = Config(**{**cfg.__dict__, "ratio": 4})
    assert model_seqused(csa, 10_000) == 128 + 512        # capped at IDX_TOPK


def test_canonical_rows_per_path():
    cfg = Config(B=1, S=1, H=1, D=8, WIN=3, IDX_TOPK=3, BLOCK=2, ratio=4, softmax_scale=1.0)
    assert canonical_row(cfg, 5, 2, None) == [0, 1, 2, 3, 4, -1]
    assert canonical_row(cfg, 5, 5, torch.tensor([4, 0, 2, 1, 3])) == [0, 1, 2, 7, 3, 5]


def test_adversarial_row_kinds():
    cfg = Config(B=1, S=1, H=1, D=8, WIN=8, IDX_TOPK=8, BLOCK=4, ratio=4, softmax_scale=1.0)
    counts = dict(live_window=2, live_cmp=2, duplicate=1, window_boundary=1, cmp_boundary=1,
                  dead_window=1, dead_cmp=1, garbage=2)
    gen = torch.Generator().manual_seed(0)
    row = adversarial_row(RowRecipe(counts, "pads_front"), cfg, window_valid=8, cmp_valid=3,
                          gen=gen)
    assert len(row) == 16 and row[:6] == [-1] * 6     # full window: no window boundary/dead
    assert 8 + 3 in row                                # the compressed boundary, ignored
    live = live_mask(torch.tensor([[row]], dtype=torch.int32),
                     torch.tensor([8 + 3], dtype=torch.int32), 8)
    assert int(live.sum()) == 5                        # 2 + 2 live and one duplicate
    row = adversarial_row(RowRecipe(counts, "pads_back"), cfg, window_valid=5, cmp_valid=0,
                          gen=gen)
    assert 5 in row and row[-1] == -1                  # the window boundary, ignored
    live = live_mask(torch.tensor([[row]], dtype=torch.int32),
                     torch.tensor([5], dtype=torch.int32), 8)
    assert int(live.sum()) == 3                        # 2 live window and one duplicate


@settings(max_examples=200)
@given(case=cases(adversarial=True))
def test_adversarial_cases_reach_the_corners(case):
    """Not an assertion per example: collected in `REACHED`, checked below."""
    i, c = case.inputs, case.config
    _, wv, cv = derived_lengths(i.seqused_kv, c.S, c.WIN)
    e = i.topk_idxs.long()
    REACHED["boundary_window"] |= bool(((e == wv[..., None]) & (wv[..., None] < c.WIN)).any())
    REACHED["boundary_cmp"] |= bool((e == c.WIN + cv[..., None]).any())
    REACHED["front_pads"] |= bool((e[..., 0] == -1).any() & (e != -1).any())
    REACHED["inf_sink"] |= bool(torch.isinf(i.attn_sink).any())
    REACHED["garbage"] |= bool(((e < -1) | (e >= 2 * (c.WIN + c.IDX_TOPK))).any())
    for name in corners(case):
        REACHED[name] = True


REACHED = dict.fromkeys(["boundary_window", "boundary_cmp", "front_pads", "inf_sink",
                         "garbage", *V1_CORNERS], False)
REACHED.pop("wrapped_ring")  # adversarial cases may follow the model's lengths or not
REACHED.pop("many_live")  # rarer: test_rows_fill_with_live_entries


def test_corners_were_reached():
    test_adversarial_cases_reach_the_corners()
    missing = [k for k, v in REACHED.items() if not v]
    assert not missing, f"200 adversarial cases never produced {missing}"


@settings(max_examples=100)
@given(case=cases())
def test_dominant_keys_dominate(case):
    """In the dominant regime some token gives one key most of its softmax weight."""
    if not case.dominant:
        return
    i = case.inputs
    rows, live = gather_rows(i)
    z = i.softmax_scale * torch.einsum("bshd,bstd->bsht", i.q.double(), rows.double())
    z = torch.where(live[:, :, None, :], z, float("-inf"))
    p = torch.softmax(z, dim=-1).nan_to_num(0.0)
    # the weight of the key the heaviest entry addresses, its duplicates included
    e = i.topk_idxs.long()[:, :, None, :].expand_as(p)
    top = torch.gather(e, -1, p.argmax(dim=-1, keepdim=True))
    assert float(torch.where(e == top, p, 0.0).sum(-1).max()) > 0.5


@given(cfg=configs(Preconditions(dims={"B": (3,)})), data=st.data())
def test_configs_respect_dims(cfg, data):
    assert cfg.B == 3 and cfg.TOPK == cfg.WIN + cfg.IDX_TOPK


#: A production kernel's declaration (FlashMLA's shape: D = 512, H = 64).
DECLARED = Preconditions(dims={"D": (512,), "H": (64,)})


def _edge_property(case):
    """The integer a v1 edge case is about, at its edge."""
    c, i = case.config, case.inputs
    if case.edge == "heads":
        assert c.H > LAUNCH_LIMIT
    if case.edge == "tokens":
        assert c.B * c.S > LAUNCH_LIMIT
    if case.edge == "lengths":
        assert int(i.seqused_kv.max()) > 2**16
        assert i.cmp_block_table.shape[1] <= edges.WIDE_EDGE_COLUMNS
    if case.edge == "table":
        assert i.cmp_block_table.shape[1] > 2**12 and i.cmp_kv.shape[0] > 2**16
        _, _, cmp_valid = derived_lengths(i.seqused_kv, c.S, c.WIN)
        assert int(cmp_valid.max()) > (2**12 - 1) * c.BLOCK        # a live column past 2^12 - 1


def test_no_edge_mode_is_excluded_without_preconditions():
    assert edges.excluded(Preconditions()) == {}
    assert not [line for line in unexercised(Preconditions()) if "integer edge" in line]


@pytest.mark.parametrize("mode", edges.EDGE_MODES)
def test_edge_modes_reach_their_edges_within_declared_dims(mode):
    """A kernel declaring dims still gets every edge its declaration admits, drawn at the
    declared D and H; the modes it excludes are named, with the declaration, by
    `strategies.coverage.unexercised`."""
    gone = edges.excluded(DECLARED)
    assert set(gone) == {"heads", "tokens"}
    if mode in gone:
        assert f"integer edge {mode!r} ({edges.EDGE_WHAT[mode]}): excluded by {gone[mode]}" in \
            unexercised(DECLARED, "v1")
        assert "H=(64,)" in gone[mode]
        return

    @settings(max_examples=3, database=None, deadline=None)
    @given(case=cases(DECLARED, edge=mode))
    def check(case):
        validate(**case.inputs.kwargs())
        assert case.edge == mode and case.config.D == 512 and case.config.H == 64
        _edge_property(case)
    check()


@pytest.mark.parametrize("kv_format", ["fp8_ds_mla", "fp8_ds_v4"])
def test_fp8_formats_get_edge_cases(kv_format):
    """`format_preconditions` fixes D to the format's (512 or 576): the edge modes still
    draw there (the pools become the format's bytes later, in `draw_case`)."""
    from sparse_attn_conformance.conformance.draw import format_preconditions

    pre = format_preconditions(Preconditions(), kv_format)
    allowed = edges.allowed_modes(pre)
    # at D = 576 a page of 2^11 rows is past EDGE_PAGE and smaller pages cannot cover
    # 2^31 slots within the table's bound: "lengths" is excluded there, and named
    lengths = {"lengths"} if kv_format == "fp8_ds_v4" else set()
    assert set(allowed) == lengths | {"table", "heads"}
    assert "tokens" in edges.excluded(pre)
    assert ("lengths" in edges.excluded(pre)) == (not lengths)
    D = pre.dims["D"][0]

    @settings(max_examples=len(allowed), database=None, deadline=None)
    @given(case=st.sampled_from(allowed).flatmap(lambda m: cases(pre, edge=m)))
    def check(case):
        assert case.edge in allowed and case.config.D == D
        _edge_property(case)
    check()


def test_declared_dims_that_exclude_the_edges_are_named():
    pre = Preconditions(dims={"B": (1, 2), "S": (1, 2), "BLOCK": (64,)}, max_seqused=None)
    gone = edges.excluded(pre)
    assert set(gone) == {"lengths", "tokens"}
    assert "BLOCK=(64,)" in gone["lengths"] and "B*S at most 4" in gone["tokens"]
    assert set(edges.excluded(Preconditions(dims={"H": (70000,)}))) == {"tokens"}   # cost
    assert set(edges.excluded(Preconditions(max_seqused=1024))) == {"lengths", "table"}
