"""Where v1 and v2 disagree on the same model state (docs/v1-v2-disagreements.md, the four
deltas of upstream-v2.md section 3.6).

One model state (per-batch start positions, S = 2 tokens per call, a window of WIN
positions, compress ratio r, an indexer's score order per batch) is written twice: as the
seed's wrapper fills a v1 call (docs/contract.md section 4: a window ring, `seqused_kv`, one
shared canonical index row) and as upstream's wrapper fills a v2 call (the window's positions
through a block table with absolute logical columns, the indexer's top slots of [0, V)). Every
cached row holds its own label `[kind, batch, id]` (kind 1: a window row, id its position;
kind 2: a compressed row, id its slot; kind 0: nothing written yet), so each convention's live
set, read through `Inputs.attended()`, says which positions and slots a token attends.
"""

from dataclasses import dataclass

import pytest
import torch

from sparse_attn_conformance.contracts import v1, v2


@dataclass(frozen=True)
class Model:
    start_pos: tuple[int, ...]
    order: tuple[tuple[int, ...], ...]  # per batch: the indexer's score order over [0, L // r)
    S: int = 2
    WIN: int = 8
    r: int = 4
    IDX_TOPK: int = 3
    BLOCK: int = 4

    @property
    def B(self) -> int:
        return len(self.start_pos)

    def L(self, b: int) -> int:
        """The cache length after the call (`kv_seq_lens`): the S tokens are written first."""
        return self.start_pos[b] + self.S


#: The state every disagreement is read from. Batch 0: L = 5 <= WIN (the ring has not
#: wrapped). Batch 1: L = 11 (wrapped, L % r = 3). Batch 2: L = 12 (wrapped, L % r = 0).
#: Batch 3: L = 24, L // r = 6 compressed slots > IDX_TOPK = 3, scored 5 > 1 > 4 > 0 > 3 > 2.
STATE = Model(start_pos=(3, 9, 10, 22), order=((0,), (1, 0), (2, 0, 1), (5, 1, 4, 0, 3, 2)))


def _row(kind: int, b: int, ident: int) -> list[float]:
    return [kind, b, ident]  # small integers: exact in bf16


def _cmp_pool(m: Model) -> tuple[torch.Tensor, torch.Tensor]:
    """Compressed slot c of batch b (c < L // r exists) at block `col * B + b` (not the identity)."""
    cols = max(1, -(-max(m.L(b) // m.r for b in range(m.B)) // m.BLOCK))
    table = torch.tensor([[c * m.B + b for c in range(cols)] for b in range(m.B)], dtype=torch.int32)
    pool = torch.zeros(cols * m.B, m.BLOCK, 3)
    for b in range(m.B):
        for c in range(cols * m.BLOCK):
            if c < m.L(b) // m.r:
                pool[table[b, c // m.BLOCK], c % m.BLOCK] = torch.tensor(_row(2, b, c))
    return pool.bfloat16(), table


def v1_call(m: Model) -> v1.Inputs:
    """The seed's wrapper (contract section 4, CSA row): ring slot `p % WIN` holds the latest
    position `p <= L - 1`; `seqused_kv = L` if `L <= WIN` else `WIN + min(IDX_TOPK, L // r)`;
    the row `arange(WIN)`, `WIN + c` for the top `min(IDX_TOPK, L // r)` slots, `-1`."""
    cols = -(-m.WIN // m.BLOCK)
    ori_table = torch.tensor([[c * m.B + b for c in range(cols)] for b in range(m.B)], dtype=torch.int32)
    ori = torch.zeros(cols * m.B, m.BLOCK, 3)
    topk = torch.full((m.B, m.S, m.WIN + m.IDX_TOPK), -1, dtype=torch.int32)
    seqused = []
    for b in range(m.B):
        L = m.L(b)
        for w in range(m.WIN):
            if w <= L - 1:
                latest = w + m.WIN * ((L - 1 - w) // m.WIN)
                ori[ori_table[b, w // m.BLOCK], w % m.BLOCK] = torch.tensor(_row(1, b, latest))
        seqused.append(L if L <= m.WIN else m.WIN + min(m.IDX_TOPK, L // m.r))
        top = m.order[b][:min(m.IDX_TOPK, L // m.r)]
        row = list(range(m.WIN)) + [m.WIN + c for c in top]
        topk[b, :, :len(row)] = torch.tensor(row, dtype=torch.int32)  # shared by the S tokens
    cmp_kv, cmp_table = _cmp_pool(m)
    return v1.validate(q=torch.zeros(m.B, m.S, 1, 3, dtype=torch.bfloat16), ori_kv=ori.bfloat16(),
                       ori_block_table=ori_table, cmp_kv=cmp_kv, cmp_block_table=cmp_table,
                       topk_idxs=topk, attn_sink=torch.zeros(1),
                       seqused_kv=torch.tensor(seqused, dtype=torch.int32), softmax_scale=1.0,
                       window_size=m.WIN)


def v2_call(m: Model) -> v2.Inputs:
    """Upstream's wrapper (upstream-v2.md section 3.5): position p of batch b at flat row
    `T_ori[b, p // BLOCK] * BLOCK + p % BLOCK`; window row = positions
    `max(0, pos-WIN+1) .. pos`, `-1`; `idx_topk` = the indexer's top `min(IDX_TOPK, V)` slots
    of `[0, V)`, `V = min(L // r, (pos + 1) // r)`, `-1`; the in-kernel cut by `pos` and r."""
    cols = -(-max(m.L(b) for b in range(m.B)) // m.BLOCK)
    ori_table = [[c * m.B + b for c in range(cols)] for b in range(m.B)]
    ori = torch.zeros(cols * m.B, m.BLOCK, 3)
    window, idx, pos_ids = [], [], []
    for b in range(m.B):
        def phys(p, b=b):
            return ori_table[b][p // m.BLOCK] * m.BLOCK + p % m.BLOCK
        for p in range(m.L(b)):
            ori.view(-1, 3)[phys(p)] = torch.tensor(_row(1, b, p))
        for s in range(m.S):
            pos = m.start_pos[b] + s
            rows = [phys(p) for p in range(max(0, pos - m.WIN + 1), pos + 1)]
            window.append(rows + [-1] * (m.WIN - len(rows)))
            visible = min(m.L(b) // m.r, (pos + 1) // m.r)
            top = [c for c in m.order[b] if c < visible][:m.IDX_TOPK]
            idx.append(top + [-1] * (m.IDX_TOPK - len(top)))
            pos_ids.append([pos])
    cmp_kv, cmp_table = _cmp_pool(m)
    T = m.B * m.S
    return v2.validate(q=torch.zeros(T, 1, 3, dtype=torch.bfloat16), ori_kv=ori.bfloat16(),
                       window_swa_indices=torch.tensor(window, dtype=torch.int32), cmp_kv=cmp_kv,
                       cmp_block_table=cmp_table, idx_topk=torch.tensor(idx, dtype=torch.int32),
                       position_ids=torch.tensor(pos_ids, dtype=torch.int32),
                       attn_sink=torch.zeros(1), softmax_scale=1.0, seq_per_batch=m.S,
                       index_topk=m.IDX_TOPK, compress_ratio=m.r)


def live_sets(inputs, m: Model) -> dict[tuple[int, int], tuple[tuple[int, ...], tuple[int, ...]]]:
    """Per token `(b, s)`: the sorted window positions and compressed slots it attends (a
    multiset: a repeat would show), read from the labels of its live rows."""
    att = inputs.attended()
    rows = att.rows.reshape(m.B, m.S, -1, 3).int()
    live = att.live.reshape(m.B, m.S, -1)
    out = {}
    for b in range(m.B):
        for s in range(m.S):
            labels = rows[b, s][live[b, s]].tolist()
            # a live row is always one the model wrote, of the token's own batch
            assert all(kind in (1, 2) and bb == b for kind, bb, _ in labels), labels
            out[b, s] = (tuple(sorted(i for k, _, i in labels if k == 1)),
                         tuple(sorted(i for k, _, i in labels if k == 2)))
    return out


@pytest.fixture(scope="module")
def both():
    return live_sets(v1_call(STATE), STATE), live_sets(v2_call(STATE), STATE)


def test_a_before_the_ring_wraps_only_v2_attends_compressed(both):
    got1, got2 = both
    # batch 0: start_pos 3, L = 5 <= WIN = 8: v1 has seqused_kv = 5, so cmp_valid = 0 for
    # both tokens; slot 0 (positions 0-3) exists and (pos+1)//4 = 1 for pos 3 and 4
    assert got1[0, 0] == (tuple(range(4)), ())
    assert got1[0, 1] == (tuple(range(5)), ())
    assert got2[0, 0] == (tuple(range(4)), (0,))
    assert got2[0, 1] == (tuple(range(5)), (0,))


def test_b_after_the_ring_wraps_v1_token0_attends_the_later_token(both):
    got1, got2 = both
    for b, L in ((1, 11), (2, 12), (3, 24)):
        # token 0 sits at L-2; v1's ring holds positions L-8 .. L-1, and window_valid = 8
        # keeps all of them, L-1 (slot (L-1) % 8, written by token 1) included
        assert got1[b, 0][0] == tuple(range(L - 8, L)), b
        assert got2[b, 0][0] == tuple(range(L - 9, L - 1)), b
        # token 1 (at L-1): the same window in both
        assert got1[b, 1][0] == got2[b, 1][0] == tuple(range(L - 8, L)), b
    assert got1[1, 0][0] == (3, 4, 5, 6, 7, 8, 9, 10)
    assert got2[1, 0][0] == (2, 3, 4, 5, 6, 7, 8, 9)


def test_c_v1_token0_keeps_one_compressed_entry_fewer_unless_r_divides_L(both):
    got1, got2 = both
    # batch 1: L = 11, L % 4 = 3: v1 cmp_valid = min(3, 11//4) - 1 = 1, v2 min(3, 10//4) = 2
    assert (got1[1, 0][1], got2[1, 0][1]) == ((0,), (0, 1))
    # batch 2: L = 12, L % 4 = 0: v1 min(3, 12//4) - 1 = 2, v2 min(3, 11//4) = 2
    assert got1[2, 0][1] == got2[2, 0][1] == (0, 1)
    # token 1 agrees in both (cmp_valid = min(IDX_TOPK, L // r) = the indexer's V)
    assert got1[1, 1][1] == got2[1, 1][1] == (0, 1)
    assert got1[2, 1][1] == got2[2, 1][1] == (0, 1, 2)


@pytest.mark.parametrize("L", range(9, 9 + 4 * 5))
def test_c_token0_counts_for_every_length_past_the_window(L):
    # one batch, indexer in slot order (HCA's order; any order when L // r <= IDX_TOPK): v1
    # token 0 attends min(IDX_TOPK, L//r) - 1 slots, v2 min(IDX_TOPK, (L-1)//r)
    m = Model(start_pos=(L - 2,), order=(tuple(range(L // 4)),))
    n1 = len(live_sets(v1_call(m), m)[0, 0][1])
    n2 = len(live_sets(v2_call(m), m)[0, 0][1])
    assert (n1, n2) == (min(3, L // 4) - 1, min(3, (L - 1) // 4))
    assert (n1 == n2) == (L % 4 == 0 and L // 4 <= 3)


def test_d_v1_cut_by_value_drops_indexer_slots_past_cmp_valid(both):
    got1, got2 = both
    # batch 3: L = 24, 6 slots, top 3 by score = 5, 1, 4; v1's shared row lists WIN + 5,
    # WIN + 1, WIN + 4, but its cut keeps slot < cmp_valid = 2 (token 0) and 3 (token 1)
    v1_row = v1_call(STATE).topk_idxs[3, 0, 8:].tolist()
    assert v1_row == [8 + 5, 8 + 1, 8 + 4]
    assert got1[3, 0][1] == got1[3, 1][1] == (1,)
    # v2: token 1 (pos 23) keeps the top 3 under the cut (23+1)//4 = 6; token 0 (pos 22)
    # has V = min(6, 23//4) = 5, so its top 3 of [0, 5) = 1, 4, 0, all under the cut 5
    assert got2[3, 1][1] == (1, 4, 5)
    assert got2[3, 0][1] == (0, 1, 4)
    assert v2.cmp_bound(torch.tensor([[22], [23]]), 4).tolist() == [5, 6]


def test_the_whole_state_as_the_doc_tables_it(both):
    got1, got2 = both
    r = range
    # (b, s): (v1 window positions, v1 slots, v2 window positions, v2 slots)
    table = {
        (0, 0): (r(0, 4), (), r(0, 4), (0,)),
        (0, 1): (r(0, 5), (), r(0, 5), (0,)),
        (1, 0): (r(3, 11), (0,), r(2, 10), (0, 1)),
        (1, 1): (r(3, 11), (0, 1), r(3, 11), (0, 1)),
        (2, 0): (r(4, 12), (0, 1), r(3, 11), (0, 1)),
        (2, 1): (r(4, 12), (0, 1, 2), r(4, 12), (0, 1, 2)),
        (3, 0): (r(16, 24), (1,), r(15, 23), (0, 1, 4)),
        (3, 1): (r(16, 24), (1,), r(16, 24), (1, 4, 5)),
    }
    assert {k: (tuple(w1), c1, tuple(w2), c2) for k, (w1, c1, w2, c2) in table.items()} == \
        {k: got1[k] + got2[k] for k in got1}
    assert v1_call(STATE).seqused_kv.tolist() == [5, 10, 11, 11]
