"""v2 property about the producer, not the kernel: a v2 kernel attends every non-negative
window lane it is given, so the window's causality is the metadata builder's. The suite's
own builder (`strategies.v2.windows.window_rows`), and any builder handed to the suite with
`--window-builder=module:callable`, must list for token `t` at position `pos` exactly the
physical rows of positions `max(0, pos - WIN + 1) .. pos` (each once), and never a later
position (docs/contract.md section 9)."""

import torch
from hypothesis import given
from hypothesis import strategies as st

from sparse_attn_conformance.strategies.v2.config import configs
from sparse_attn_conformance.strategies.v2.positions import adversarial_positions
from sparse_attn_conformance.strategies.v2.windows import lookup, ori_block_tables

#: Window builders get dense tables: positions stay within this many table columns.
MAX_COLUMNS = 512
#: Work budget of one example (the builder is called once; the check is per lane).
BUDGET = 2**20


@given(data=st.data())
def test_window_rows_list_exactly_the_last_win_positions(window_builder, data):
    cfg = data.draw(configs(budget=BUDGET), label="config")
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    max_position = MAX_COLUMNS * cfg.BLOCK - 1
    pos, _ = data.draw(adversarial_positions(cfg, gen, max_position=max_position, far=False),
                       label="positions")
    table, _ = data.draw(ori_block_tables(pos, cfg.S, cfg.WIN, cfg.BLOCK, gen, 2**40),
                         label="ori_block_table")
    rows = window_builder.fn(position_ids=pos.clone(), ori_block_table=table.clone(),
                             seq_per_batch=cfg.S, window_size=cfg.WIN, block=cfg.BLOCK)
    assert isinstance(rows, torch.Tensor) and rows.dtype == torch.int32 \
        and tuple(rows.shape) == (cfg.T, cfg.WIN), (
        f"{window_builder.name}: expected window_swa_indices int32 [T={cfg.T}, WIN={cfg.WIN}], "
        f"got {getattr(rows, 'dtype', type(rows))} {tuple(getattr(rows, 'shape', ()))}")
    for t in range(cfg.T):
        b, p = t // cfg.S, int(pos[t, 0])
        want = torch.arange(max(0, p - cfg.WIN + 1), p + 1, dtype=torch.int64)
        blocks = lookup(table, torch.full_like(want, b), want // cfg.BLOCK)
        expected = sorted((blocks * cfg.BLOCK + want % cfg.BLOCK).tolist())
        got = rows[t].to(torch.int64)
        listed = sorted(got[got >= 0].tolist())
        if listed != expected:
            later = _positions_of(table, b, got[got >= 0], cfg.BLOCK, p)
            raise AssertionError(
                f"{window_builder.name}: token t={t} (batch {b}) at position {p}, WIN={cfg.WIN}, "
                f"BLOCK={cfg.BLOCK}: expected the rows of positions {int(want[0])}..{p} "
                f"({len(expected)} rows), got {len(listed)} rows {listed[:16]}"
                + (f"; rows of later positions {later}" if later else "")
                + f"\n  row: {rows[t].tolist()[:32]}\n  ori_block_table[{b}]: "
                f"{table[b].tolist()[:32]}")


def _positions_of(table: torch.Tensor, b: int, rows: torch.Tensor, block: int, p: int) -> list[int]:
    """Positions after `p` whose physical row (through batch `b`'s table) is among `rows`."""
    cols = table.shape[1]
    later = torch.arange(p + 1, cols * block, dtype=torch.int64)
    phys = lookup(table, torch.full_like(later, b), later // block) * block + later % block
    hit = torch.isin(phys, rows)
    return later[hit].tolist()[:8]
