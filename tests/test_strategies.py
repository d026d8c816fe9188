"""Meta-tests of the strategies: every case is valid, honours the kernel's preconditions,
and the model paths write what contract section 4 says."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.contract import Preconditions, derived_lengths, live_mask, validate
from strategies.cases import cases
from strategies.config import Config, configs
from strategies.lengths import model_seqused
from strategies.rows import RowRecipe, adversarial_row, canonical_row


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


@given(case=cases(adversarial=False, unwrapped=True))
def test_unwrapped_cases_keep_the_ring_unwrapped(case):
    assert all(p + case.config.S <= case.config.WIN for p in case.start_pos)


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
    """Not an assertion per example: collected in `CORNERS`, checked below."""
    i, c = case.inputs, case.config
    _, wv, cv = derived_lengths(i.seqused_kv, c.S, c.WIN)
    e = i.topk_idxs.long()
    CORNERS["boundary_window"] |= bool(((e == wv[..., None]) & (wv[..., None] < c.WIN)).any())
    CORNERS["boundary_cmp"] |= bool((e == c.WIN + cv[..., None]).any())
    CORNERS["empty_token"] |= bool((~live_mask(i.topk_idxs, i.seqused_kv, c.WIN).any(-1)).any())
    CORNERS["front_pads"] |= bool((e[..., 0] == -1).any() & (e != -1).any())
    CORNERS["inf_sink"] |= bool(torch.isinf(i.attn_sink).any())
    CORNERS["garbage"] |= bool(((e < -1) | (e >= 2 * (c.WIN + c.IDX_TOPK))).any())


CORNERS = dict.fromkeys(["boundary_window", "boundary_cmp", "empty_token", "front_pads",
                         "inf_sink", "garbage"], False)


def test_corners_were_reached():
    test_adversarial_cases_reach_the_corners()
    missing = [k for k, v in CORNERS.items() if not v]
    assert not missing, f"200 adversarial cases never produced {missing}"


@given(cfg=configs(Preconditions(dims={"B": (3,)})), data=st.data())
def test_configs_respect_dims(cfg, data):
    assert cfg.B == 3 and cfg.TOPK == cfg.WIN + cfg.IDX_TOPK
