"""One card per worker, tested without a card: fake card ids through the same variables,
the reference kernel in xdist workers, the pypto kernel in simulation."""

import json
import os

import pytest

from sparse_attn_conformance.kernels.pypto import pool as pypto_pool
from sparse_attn_conformance.nightly import npu_pool
from tests.pool_helpers import SUITE, run_pytest

PROBE = """
import json, os, tempfile
from sparse_attn_conformance.kernels.torch.reference import sparse_attn as _ref

KEYS = ("ASCEND_RT_VISIBLE_DEVICES", "SPARSE_ATTN_NPU_CARD", "TILE_FWK_OUTPUT_DIR",
        "ASCEND_PROCESS_LOG_PATH", "PYPTO_HOME", "PYTEST_XDIST_WORKER")


def attn(**kw):
    rec = {k: os.environ.get(k) for k in KEYS}
    rec["tempdir"] = tempfile.gettempdir()
    with open(os.path.join(os.environ["PROBE_OUT"], rec["PYTEST_XDIST_WORKER"] + ".json"), "w") as f:
        json.dump(rec, f)
    return _ref(**kw)
"""


@pytest.mark.parametrize("spec, cards", [("0-7", list(range(8))), ("3", [3]),
                                         ("0,2,4-5", [0, 2, 4, 5]), (" 1 - 2 ", [1, 2])])
def test_card_ids_parse(spec, cards):
    assert npu_pool.parse_cards(spec) == cards


@pytest.mark.parametrize("spec, why", [("7-3", "runs backwards"), ("a", "'a' is not a card id"),
                                       ("0,0", "out of order or repeated"),
                                       ("2,1", "out of order or repeated"),
                                       ("0-", "is not a card id"), ("", "is not a card id"),
                                       ("-1", "is not a card id")])
def test_bad_card_ids_are_usage_errors(spec, why):
    with pytest.raises(pytest.UsageError) as e:
        npu_pool.parse_cards(spec)
    assert "--npu-cards: expected card ids such as 0-7 or 0,2,4-5" in str(e.value)
    assert repr(spec) in str(e.value) and why in str(e.value)


def test_worker_k_gets_card_k_over_workers_per_card():
    cards = [4, 5, 6]
    assert [npu_pool.card_of(k, cards, 2) for k in range(6)] == [4, 4, 5, 5, 6, 6]
    with pytest.raises(pytest.UsageError, match="expected at most 6 xdist workers .* got 7"):
        npu_pool._check_capacity(7, cards, 2)


def test_pypto_worker_checks_its_one_card(tmp_path, monkeypatch):
    monkeypatch.delenv("SPARSE_ATTN_NPU_CARD", raising=False)
    assert pypto_pool.settle(tmp_path, "sim") is None  # no pool: only the output folder
    assert os.environ["TILE_FWK_OUTPUT_DIR"] == str(tmp_path / "output")
    monkeypatch.setenv("SPARSE_ATTN_NPU_CARD", "5")
    monkeypatch.setenv("ASCEND_RT_VISIBLE_DEVICES", "5")
    assert pypto_pool.settle(tmp_path, "sim") == "5"
    for wrong in ("4,5", "4", "5x", ""):
        monkeypatch.setenv("ASCEND_RT_VISIBLE_DEVICES", wrong)
        with pytest.raises(RuntimeError, match="pinned to card 5"):
            pypto_pool.settle(tmp_path, "sim")
    assert pypto_pool.visible_cards(lambda: 1) == 1  # on a card: torch_npu's count


def test_each_xdist_worker_sees_exactly_its_own_card_and_folders(tmp_path):
    """Three workers, two per card on cards 4-5: gw0 and gw1 on 4, gw2 on 5; each its own
    folder for pypto's output, CANN's logs, pypto's run records and temp files."""
    (tmp_path / "probe_kernel.py").write_text(PROBE)
    out, run_dir = tmp_path / "seen", tmp_path / "run"
    out.mkdir()
    env = dict(os.environ, PROBE_OUT=str(out))
    res = run_pytest(str(SUITE / "v1" / "test_regression_fixture.py"), "--kernel=probe_kernel:attn",
                     "-n", "3", "--dist", "each", "--npu-cards=4-5", "--npu-workers-per-card=2",
                     f"--npu-run-dir={run_dir}", env=env, extra_path=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    seen = {p.stem: json.loads(p.read_text()) for p in out.glob("gw*.json")}
    assert sorted(seen) == ["gw0", "gw1", "gw2"]
    assert {w: s["ASCEND_RT_VISIBLE_DEVICES"] for w, s in seen.items()} == {
        "gw0": "4", "gw1": "4", "gw2": "5"}
    for wid, s in seen.items():
        assert s["SPARSE_ATTN_NPU_CARD"] == s["ASCEND_RT_VISIBLE_DEVICES"]
        assert s["TILE_FWK_OUTPUT_DIR"] == str(run_dir / wid / "output")
        assert s["ASCEND_PROCESS_LOG_PATH"] == str(run_dir / wid / "log")
        assert s["PYPTO_HOME"] == str(run_dir / wid / "pypto_home")
        assert s["tempdir"] == str(run_dir / wid / "tmp")
    assert len({s["TILE_FWK_OUTPUT_DIR"] for s in seen.values()}) == 3


def test_more_workers_than_the_cards_take_is_a_usage_error():
    res = run_pytest(str(SUITE / "v1" / "test_regression_fixture.py"), "--kernel=reference", "-n", "3",
                     "--npu-cards=0-1", "--co")
    assert res.returncode == 4, res.stdout[-2000:]
    assert ("--npu-cards: expected at most 2 xdist workers (2 cards x 1 per card, "
            "--npu-workers-per-card), got 3") in res.stdout + res.stderr


def test_the_pypto_kernel_runs_pinned_in_simulation(tmp_path):
    """The pypto worker process inherits the pin: it checks its card, and pypto's run
    records land in the worker's folder (not in ~/.pypto, shared by every worker)."""
    run_dir = tmp_path / "run"
    res = run_pytest(str(SUITE / "v1" / "test_regression_fixture.py"), "--kernel=pypto", "-p", "no:xdist",
                     "--npu-cards=3", f"--npu-run-dir={run_dir}", "--hypothesis-profile=smoke")
    assert res.returncode == 0, res.stdout[-3000:]
    assert "npu pool: cards 3, 1 worker(s) per card" in res.stdout
    assert list((run_dir / "main" / "pypto_home" / "run").glob("rundata_*"))
