"""Meta-tests of the v2 strategies: every case is a valid v2 call, model-written inputs are
what upstream's producers write (contracts/v2.py, docs upstream-v2 sections 1.6 and 3.5),
preconditions are honoured, the budget holds and every v2 corner is reached."""

import collections
import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_attn_conformance.contracts.v2 import (
    INT32_MAX,
    Preconditions,
    cmp_bound,
    live_lanes,
    validate,
)
from sparse_attn_conformance.strategies.config import DEFAULT_BUDGET, cost
from sparse_attn_conformance.strategies.coverage import CORNERS, unexercised
from sparse_attn_conformance.strategies.coverage import corners as any_corners
from sparse_attn_conformance.strategies.v1.coverage import V1_CORNERS
from sparse_attn_conformance.strategies.v2 import edges as v2_edges
from sparse_attn_conformance.strategies.v2 import positions
from sparse_attn_conformance.strategies.v2.cases import Case, cases
from sparse_attn_conformance.strategies.v2.config import Config, configs
from sparse_attn_conformance.strategies.v2.coverage import CORNERS as V2
from sparse_attn_conformance.strategies.v2.coverage import corners, fp32_cut
from sparse_attn_conformance.strategies.v2.edges import (
    EDGE_COLUMNS,
    EDGE_COST,
    EDGE_MODES,
    LAUNCH_LIMIT,
)
from sparse_attn_conformance.strategies.v2.indexer import MAX_POOL_ELEMENTS, cmp_block_tables, visible
from sparse_attn_conformance.strategies.v2.windows import lookup, window_rows

DIMS = ("B", "S", "H", "D", "WIN", "IDX_TOPK", "BLOCK")


def _max(t):
    return int(t.max()) if t.numel() else -1


def _dims(case):
    return {k: getattr(case.config, k) for k in DIMS}


@settings(max_examples=60)
@given(case=cases())
def test_every_case_is_a_valid_call(case):
    validated = validate(**case.inputs.kwargs())
    c = case.config
    assert validated.window_swa_indices.shape == (c.T, c.WIN)
    assert validated.idx_topk.shape == (c.T, c.L) and c.L >= c.IDX_TOPK
    assert validated.compress_ratio == c.ratio and isinstance(case, Case)


def _block(case, b, col):
    return int(lookup(case.ori_block_table, torch.tensor([b]), torch.tensor([col]))[0])


@settings(max_examples=60)
@given(case=cases(adversarial=False))
def test_model_windows_are_the_producers(case):
    i, c = case.inputs, case.config
    assert torch.equal(i.window_swa_indices,
                       window_rows(i.position_ids, case.ori_block_table, c.S, c.WIN, c.BLOCK))
    assert case.start_pos is not None and case.path in ("CSA", "HCA", "SWA")
    pages = {}
    for t, p in enumerate(i.position_ids.reshape(-1).tolist()):
        b = t // c.S
        want = list(range(max(0, p - c.WIN + 1), p + 1))     # oldest first, own position last
        row = i.window_swa_indices[t].tolist()
        assert row[len(want):] == [-1] * (c.WIN - len(want))
        for lane, q in zip(row, want, strict=False):
            blk = _block(case, b, q // c.BLOCK)
            assert 0 <= blk < i.ori_kv.shape[0] and lane == blk * c.BLOCK + q % c.BLOCK
            pages[(b, q // c.BLOCK)] = blk
    # one shared pool: every page a window reads has its own block
    assert len(set(pages.values())) == len(pages)


@settings(max_examples=60)
@given(case=cases(adversarial=False))
def test_model_idx_rows_are_the_indexers(case):
    i, c = case.inputs, case.config
    kv_len = [s + c.S for s in case.start_pos]
    V = visible(i.position_ids, kv_len, c)
    for t in range(c.T):
        row = i.idx_topk[t].tolist()
        k = 0 if case.path == "SWA" else min(c.IDX_TOPK, int(V[t]))
        head = row[:k]
        assert row[k:] == [-1] * (c.L - k)                 # -1 tail, unread columns included
        assert len(set(head)) == k and all(0 <= x < int(V[t]) for x in head)
        if case.path == "HCA":
            assert head == list(range(k))


@settings(max_examples=60)
@given(case=cases(adversarial=False))
def test_model_positions_follow_the_starts(case):
    pos = case.inputs.position_ids.reshape(case.config.B, case.config.S)
    want = torch.tensor(case.start_pos)[:, None] + torch.arange(case.config.S)
    assert torch.equal(pos.long(), want)


PRE = Preconditions(canonical_rows=True, canonical_windows=True, finite_row0=True,
                    finite_sinks=True, max_position=1000,
                    dims={"H": (2,), "D": (16,), "WIN": (8,), "BLOCK": (4,), "S": (2,)})


@settings(max_examples=60)
@given(case=cases(PRE))
def test_preconditions_are_honoured(case):
    c, i = case.config, case.inputs
    assert (c.H, c.D, c.WIN, c.BLOCK, c.S) == (2, 16, 8, 4, 2)
    assert case.path in ("CSA", "HCA", "SWA")
    assert torch.isfinite(i.attn_sink).all()
    assert torch.isfinite(i.ori_kv.reshape(-1, c.D)[0].float()).all()
    assert int(i.position_ids.max()) <= 1000 and _max(i.idx_topk) <= 1000
    assert torch.equal(i.window_swa_indices,
                       window_rows(i.position_ids, case.ori_block_table, c.S, c.WIN, c.BLOCK))


@settings(max_examples=60)
@given(case=cases(Preconditions(canonical_windows=True, max_position=5000), adversarial=True))
def test_canonical_windows_and_max_position_hold_in_adversarial_cases(case):
    c, i = case.config, case.inputs
    assert case.path == "adversarial"
    assert torch.equal(i.window_swa_indices,
                       window_rows(i.position_ids, case.ori_block_table, c.S, c.WIN, c.BLOCK))
    assert int(i.position_ids.max()) <= 5000 and _max(i.idx_topk) <= 5000


@settings(max_examples=60)
@given(case=cases(Preconditions(finite_row0=True, finite_sinks=True), adversarial=True))
def test_finite_row0_and_sinks_in_adversarial_cases(case):
    assert torch.isfinite(case.inputs.ori_kv.reshape(-1, case.config.D)[0].float()).all()
    assert torch.isfinite(case.inputs.attn_sink).all()


@pytest.mark.parametrize("pre", [Preconditions(), PRE, Preconditions(canonical_rows=True)],
                         ids=["none", "canonical", "canonical_rows"])
def test_empty_token_cases_have_one(pre):
    @settings(max_examples=30)
    @given(case=cases(pre, empty_token=True))
    def check(case):
        validate(**case.inputs.kwargs())
        live_w, live_c = live_lanes(case.inputs)
        assert bool((~(live_w.any(-1) | live_c.any(-1))).any())
    check()


@settings(max_examples=100)
@given(case=cases())
def test_cases_stay_within_the_budget(case):
    """Ordinary cases stay within the budget; an edge case (strategies/v2/edges.py) within
    its own fixed bound, whatever the profile (2^16 tokens cost about a second)."""
    i = case.inputs
    assert cost(_dims(case)) <= (DEFAULT_BUDGET if case.edge is None else EDGE_COST)
    # the pools and tables stay of the budget's order however far the positions are
    elements = (i.ori_kv.numel() + i.cmp_kv.numel()) + 16 * i.cmp_block_table.numel()
    assert elements <= 2 * DEFAULT_BUDGET, (elements, case.describe(4))


@settings(max_examples=40)
@given(case=st.sampled_from(EDGE_MODES).flatmap(lambda mode: cases(edge=mode)))
def test_edge_cases_reach_their_edges(case):
    """Every edge case puts the one integer it is about at its edge, with the rest tiny, and
    holds ids at and beside every token's cut."""
    c, i = case.config, case.inputs
    validate(**i.kwargs())
    assert case.edge in EDGE_MODES
    assert c.H * c.D <= 2 * 4 or case.edge == "heads"
    pos = i.position_ids.reshape(-1).to(torch.int64)
    bound = cmp_bound(i.position_ids, i.compress_ratio)
    ids = i.idx_topk[:, :c.IDX_TOPK].to(torch.int64)
    assert bool(((ids == (bound - 1)[:, None]).any(-1)).all())         # live, beside the cut
    at = bound <= INT32_MAX
    assert bool(((ids == bound[:, None]).any(-1) | ~at).all())          # ignored, at the cut
    live_w, live_c = live_lanes(i)
    if case.edge == "positions":
        assert int(pos.max()) >= 2**16 - c.S - 2 and i.cmp_block_table.shape[1] <= EDGE_COLUMNS
    if case.edge == "table":
        table = i.cmp_block_table.to(torch.int64)
        b = i.batch_of_token[:, None].expand_as(ids)
        blk = table[b[live_c], ids[live_c] // c.BLOCK]
        # the anchor's column is just before or past 2^12, 2^15 or 2^16 (offset -1 .. 3)
        assert table.shape[1] >= 2**12 and i.cmp_kv.shape[0] > 2**16
        assert blk.numel() and bool((blk >= 2**16).all())
    if case.edge == "window":
        assert bool((i.window_swa_indices.to(torch.int64)[live_w] >= 2**16).all())
    if case.edge == "heads":
        assert c.H > LAUNCH_LIMIT and c.T <= 4
    if case.edge == "tokens":
        assert c.T > LAUNCH_LIMIT and c.H == 1
        assert bool(live_w[LAUNCH_LIMIT:].any(-1).all())    # every token past the limit sees a row


@settings(max_examples=100)
@given(data=st.data())
def test_a_given_config_is_kept(data):
    first = data.draw(cases(edge=None))       # an edge case's config is not for reuse
    second = data.draw(cases(config=first.config))
    assert dataclasses.replace(second.config, softmax_scale=0.0) == dataclasses.replace(
        first.config, softmax_scale=0.0)


REACHED = dict.fromkeys(V2, 0)


#: Most counted cases are drawn as the suite draws them, some with an empty token, and some
#: in each edge mode given: within one run the drawn modes cluster (Hypothesis mutates
#: earlier examples), and every corner must be shown reachable.
COUNTED = st.sampled_from(("drawn",) * 8 + ("empty",) * 3 + EDGE_MODES)


@settings(max_examples=400, database=None)
@given(case=COUNTED.flatmap(lambda k: cases(empty_token=True) if k == "empty" else cases(edge=k)))
def _count_corners(case):
    """Not a test of its own (its draws would run twice): counted in `REACHED`, checked by
    `test_corners_were_reached`, which runs it."""
    for name in corners(case):
        REACHED[name] += 1
    assert any_corners(case) == corners(case)       # the v1 entry point dispatches


def test_corners_were_reached():
    _count_corners()
    missing = [k for k, v in REACHED.items() if not v]
    assert not missing, f"400 cases never produced {missing}"


@settings(max_examples=200, database=None)
@given(data=st.data())
def test_fp32_cut_regime_puts_a_token_where_an_fp32_cut_is_one_too_high(data):
    """The "fp32_cut" start regime: token 0's `pos + 1` lies past 2^26, just below a multiple
    `k*r` that fp32 represents, so fp32 rounds it up to `k*r`: a cut computed in fp32 lies
    past the exact one (by one slot, or more for r < 4)."""
    cfg = data.draw(configs())
    gen = torch.Generator().manual_seed(0)
    start = data.draw(_starts_in("fp32_cut", cfg, gen))
    assert 2**26 - 3 <= start + 1 <= INT32_MAX
    pos = torch.tensor([start], dtype=torch.int64)
    assert int(fp32_cut(pos, cfg.cut)) > int(cmp_bound(pos, cfg.cut))


@st.composite
def _starts_in(draw, regime, cfg, gen):
    return positions._start(draw, 0, cfg, gen, INT32_MAX - cfg.S + 1, regime)


@settings(max_examples=300, database=None)
@given(case=cases(Preconditions(dims={"H": (2, 3), "D": (16, 24), "BLOCK": (4, 6)},
                                max_cmp_columns=256)))
def _count_bounded(case):
    """Counted in `BOUNDED`, checked by `test_a_narrow_table_still_meets_an_inexact_cut`."""
    BOUNDED.update(corners(case))


BOUNDED = collections.Counter()


def test_a_narrow_table_still_meets_an_inexact_cut():
    """A kernel that declares `max_cmp_columns` gets no edge cases, yet its cases still
    hold ids between the exact cut and the one fp32 gives (the "fp32_cut" positions)."""
    _count_bounded()
    assert BOUNDED["inexact_cut"] >= 5, dict(BOUNDED)


def test_corner_names_are_listed_for_the_report():
    assert list(CORNERS)[:len(V1_CORNERS)] == list(V1_CORNERS)
    assert set(V2) <= set(CORNERS)


def test_the_producer_straddles_non_adjacent_pages():
    table = torch.tensor([[7, 2, 9]], dtype=torch.int32)
    pos = torch.tensor([[5], [6]], dtype=torch.int32)
    rows = window_rows(pos, table, seq_per_batch=2, window_size=6, block=4)
    # positions 0..5 then 1..6: columns 0 (block 7) and 1 (block 2), oldest first
    assert rows.tolist() == [[28, 29, 30, 31, 8, 9], [29, 30, 31, 8, 9, 10]]
    assert rows.dtype == torch.int32
    sparse = {0: {0: 7, 1: 2}}
    assert torch.equal(window_rows(pos, sparse, 2, 6, 4), rows)


def test_the_producer_pads_a_short_history():
    table = torch.tensor([[3, -1], [0, 5]], dtype=torch.int32)
    pos = torch.tensor([[0], [2], [1], [4]], dtype=torch.int32)
    rows = window_rows(pos, table, seq_per_batch=2, window_size=4, block=4)
    assert rows.tolist() == [[12, -1, -1, -1], [12, 13, 14, -1],
                             [0, 1, -1, -1], [1, 2, 3, 20]]
    # an unmapped column (-1 entry, or past the table) gives -1 lanes
    far = window_rows(torch.tensor([[5], [9]], dtype=torch.int32), table[:1], 2, 4, 4)
    assert far.tolist() == [[14, 15, -1, -1], [-1, -1, -1, -1]]


def test_the_producer_reaches_int32_positions():
    p = INT32_MAX - 1
    sparse = {0: {p // 128: 0, p // 128 - 1: 3}}
    rows = window_rows(torch.tensor([[p]], dtype=torch.int32), sparse, 1, 128, 128)
    assert int(rows[0, -1]) == p % 128 and bool((rows >= 0).all())
    assert lookup(sparse, torch.tensor([0]), torch.tensor([5])).tolist() == [-1]


@pytest.mark.parametrize("kwargs, name", [
    ({"window_size": 0}, "window_size"),
    ({"block": 2.0}, "block"),
    ({"seq_per_batch": 3}, "seq_per_batch"),
    ({"position_ids": torch.tensor([[-1], [0]], dtype=torch.int32)}, "position_ids"),
    ({"ori_block_table": torch.zeros(3, 2, dtype=torch.int32)}, "ori_block_table"),
    ({"ori_block_table": [[0, 1]]}, "ori_block_table"),
])
def test_the_producer_names_bad_arguments(kwargs, name):
    args = {"position_ids": torch.tensor([[0], [1]], dtype=torch.int32),
            "ori_block_table": torch.zeros(1, 2, dtype=torch.int32), "seq_per_batch": 2,
            "window_size": 4, "block": 4, **kwargs}
    with pytest.raises(ValueError, match=name):
        window_rows(**args)


def test_cut_bound_matches_contract_in_model_rows():
    """The model's rows never hold an id at or past the kernel's own cut."""
    @settings(max_examples=40)
    @given(case=cases(adversarial=False))
    def check(case):
        i = case.inputs
        bound = cmp_bound(i.position_ids, i.compress_ratio)
        ids = i.idx_topk[:, :i.IDX_TOPK].long()
        assert bool(((ids < 0) | (ids < bound[:, None])).all())
    check()


#: A production kernel's declaration (D = 512, H = 64, WIN = 128).
DECLARED = Preconditions(dims={"D": (512,), "H": (64,), "WIN": (128,)})


def _edge_property(case):
    """The integer a v2 edge case is about, at its edge."""
    c, i = case.config, case.inputs
    live_w, live_c = live_lanes(i)
    if case.edge == "positions":
        pos = i.position_ids.to(torch.int64)
        assert int(pos.max()) >= 2**16 - c.S - 2
        assert i.cmp_block_table.shape[1] <= v2_edges.v1_edges.WIDE_EDGE_COLUMNS
    if case.edge == "table":
        ids = i.idx_topk[:, :c.IDX_TOPK].to(torch.int64)
        table = i.cmp_block_table.to(torch.int64)
        b = i.batch_of_token[:, None].expand_as(ids)
        blk = table[b[live_c], ids[live_c] // c.BLOCK]
        # the anchor's column is just before or past 2^12, 2^15 or 2^16 (offset -1 .. 3)
        assert table.shape[1] >= 2**12 and i.cmp_kv.shape[0] > 2**16
        assert blk.numel() and bool((blk >= 2**16).all())
    if case.edge == "window":
        assert bool((i.window_swa_indices.to(torch.int64)[live_w] >= 2**16).all())
    if case.edge == "heads":
        assert c.H > LAUNCH_LIMIT
    if case.edge == "tokens":
        assert c.T > LAUNCH_LIMIT


def test_no_edge_mode_is_excluded_without_preconditions():
    assert v2_edges.excluded(Preconditions()) == {}
    # the modes' windows are the producer's: canonical windows exclude none
    assert v2_edges.excluded(Preconditions(canonical_windows=True)) == {}


@pytest.mark.parametrize("mode", EDGE_MODES)
def test_edge_modes_reach_their_edges_within_declared_dims(mode):
    """A kernel declaring dims still gets every edge its declaration admits, drawn at the
    declared D, H and WIN; the modes it excludes are named, with the declaration, by
    `strategies.coverage.unexercised`."""
    gone = v2_edges.excluded(DECLARED)
    assert set(gone) == {"heads", "tokens"}
    if mode in gone:
        assert (f"integer edge {mode!r} ({v2_edges.EDGE_WHAT[mode]}): excluded by {gone[mode]}"
                in unexercised(DECLARED, "v2"))
        assert "H=(64,)" in gone[mode]
        return

    @settings(max_examples=3, database=None, deadline=None)
    @given(case=cases(DECLARED, edge=mode))
    def check(case):
        validate(**case.inputs.kwargs())
        c = case.config
        assert case.edge == mode and (c.D, c.H, c.WIN) == (512, 64, 128)
        _edge_property(case)
    check()


def test_fp8_v4_gets_edge_cases():
    """`format_preconditions` fixes D to fp8_ds_v4's 512: the edge modes still draw there
    (the pools become the format's bytes later, in `draw_case`); 2^16 tokens at D = 512
    are past the edge bounds, and named."""
    from sparse_attn_conformance.conformance.draw import format_preconditions

    pre = format_preconditions(Preconditions(), "fp8_ds_v4")
    allowed = v2_edges.allowed_modes(pre)
    assert set(allowed) == {"positions", "table", "window", "heads"}
    assert any("integer edge 'tokens'" in line and "D=(512,)" in line
               for line in unexercised(pre, "v2"))

    @settings(max_examples=len(allowed), database=None, deadline=None)
    @given(case=st.sampled_from(allowed).flatmap(lambda m: cases(pre, edge=m)))
    def check(case):
        validate(**case.inputs.kwargs())
        assert case.edge in allowed and case.config.D == 512
        _edge_property(case)
    check()


def test_declared_idx_topk_below_five_keeps_the_edges():
    pre = Preconditions(dims={"IDX_TOPK": (2,), "BLOCK": (2**14,)})

    @settings(max_examples=4, database=None, deadline=None)
    @given(case=st.sampled_from(("positions", "window")).flatmap(lambda m: cases(pre, edge=m)))
    def check(case):
        validate(**case.inputs.kwargs())
        assert case.config.IDX_TOPK == 2 and case.config.BLOCK == 2**14
        _edge_property(case)
    check()


@settings(max_examples=10, database=None, deadline=None)
@given(data=st.data())
def test_a_compressed_pool_past_the_bound_shares_its_blocks(data):
    """Every live column gets its own block while the pool stays within MAX_POOL_ELEMENTS;
    past it (8192 live columns of 64 rows at an FP8 format's D = 512: 2^28 elements), the
    pool keeps the bound and the columns alias its blocks, each still a real one."""
    cfg = Config(B=1, S=16, H=1, D=512, WIN=1, IDX_TOPK=512, BLOCK=64, L=512, ratio=1, cut=1,
                 softmax_scale=1.0)
    pos = torch.full((16, 1), 2**20, dtype=torch.int32)
    idx = (torch.arange(16 * 512).reshape(16, 512) * 64).to(torch.int32)  # a column each
    table, n = data.draw(cmp_block_tables(idx, pos, cfg, torch.Generator().manual_seed(0)))
    assert n * cfg.BLOCK * cfg.D == MAX_POOL_ELEMENTS
    used = table[0, :16 * 512].to(torch.int64)
    assert bool(((used >= 0) & (used < n)).all())
    small = dataclasses.replace(cfg, S=1, IDX_TOPK=8, L=8)
    table, n = data.draw(cmp_block_tables(idx[:1, :8], pos[:1], small, torch.Generator().manual_seed(0)))
    assert len(set(table[0, :8].tolist())) == 8 and 8 <= n <= 16  # its own block each
