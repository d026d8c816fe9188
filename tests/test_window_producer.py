"""The v2 producer property (conformance/v2/test_window_producer.py) passes on the suite's
own window builder and fails, by its own assertion, on builders with one bug each; the
`--window-builder` option puts a user's builder beside the suite's."""

import os
import subprocess
import sys

import pytest
import torch

from sparse_attn_conformance.conformance.v2.test_window_producer import (
    test_window_rows_list_exactly_the_last_win_positions as prop,
)
from sparse_attn_conformance.plugin.selection import WindowBuilder
from sparse_attn_conformance.strategies.v2.windows import lookup, window_rows
from tests.in_profile import in_profile


def _rows_of(positions, table, b, block):
    """Physical rows of logical `positions` (int64 `[T, WIN]`, -1 where none) in batch `b`."""
    blk = lookup(table, b, positions.clamp(min=0) // block)
    return torch.where((positions >= 0) & (blk >= 0), blk * block + positions % block, -1)


def one_ahead(*, position_ids, ori_block_table, seq_per_batch, window_size, block):
    """Lists positions pos-WIN+2 .. pos+1: the next token's row, one too late."""
    return window_rows(position_ids + 1, ori_block_table, seq_per_batch, window_size, block)


def current_left_out(*, position_ids, ori_block_table, seq_per_batch, window_size, block):
    """Lists positions pos-WIN .. pos-1: the window before the current token was written
    (the cache-write-after-attention order upstream's #728 changed)."""
    pos = position_ids.to(torch.int64).reshape(-1)
    k = torch.arange(window_size)[None, :]
    p = pos[:, None] - window_size + k
    b = (torch.arange(pos.numel()) // seq_per_batch)[:, None].expand_as(p)
    return _rows_of(torch.where(p >= 0, p, -1), ori_block_table, b, block).to(torch.int32)


def first_page_only(*, position_ids, ori_block_table, seq_per_batch, window_size, block):
    """Resolves every position through the batch's first table column: a window that
    straddles pages reads the wrong page (upstream's single ring page, #486 and #722)."""
    rows = window_rows(position_ids, ori_block_table, seq_per_batch, window_size, block)
    pos = position_ids.to(torch.int64).reshape(-1)
    n = torch.clamp(pos + 1, max=window_size)
    p = pos[:, None] - n[:, None] + 1 + torch.arange(window_size)[None, :]
    b = (torch.arange(pos.numel()) // seq_per_batch)[:, None].expand_as(p)
    first = lookup(ori_block_table, b, torch.zeros_like(p))
    return torch.where(rows >= 0, first * block + p % block, rows).to(torch.int32)


FAULTY = [one_ahead, current_left_out, first_page_only]


def _run(builder):
    """The property in the kill-rate run's profile (derandomized: the same verdict each run)."""
    in_profile(prop, "kill")(window_builder=builder)


def test_the_suites_builder_passes():
    _run(WindowBuilder("suite", window_rows))


@pytest.mark.parametrize("fn", FAULTY, ids=lambda f: f.__name__)
def test_a_faulty_builder_is_caught_by_the_property(fn):
    with pytest.raises(AssertionError, match="expected the rows of positions"):
        _run(WindowBuilder(fn.__name__, fn))


def test_window_builder_option_runs_a_users_builder(tmp_path):
    (tmp_path / "my_builder.py").write_text(
        "from tests.test_window_producer import one_ahead as build\n")
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "conformance/v2/test_window_producer.py", "-p", "no:xdist",
         "-p", "no:cacheprovider", "--window-builder=my_builder:build", "--kernel=reference-v2",
         "--hypothesis-profile=kill", "-q"],
        capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}:{os.getcwd()}"})
    out = res.stdout + res.stderr
    assert res.returncode == 1, out[-3000:]
    assert "1 failed, 1 passed" in out, out[-3000:]
    assert "my_builder:build: token" in out, out[-3000:]
