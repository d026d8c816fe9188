"""The g++ cache pypto's worker compiles through (kernels/pypto/toolchain.py): a source that
differs only in full-line comments is served from the cache; any other difference, in the
source, a header beside it or the flags, compiles afresh."""

import os
import shutil
import subprocess

import pytest

from sparse_attn_conformance.kernels.pypto import toolchain as pypto_toolchain

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")

SOURCE = """#include "expr.h"
// #name: TENSOR_kernel #hash: {hash} #magic: {magic}
int entry(void) {{
  // hash={hash}
  return {value} + EXPR;
}}
"""


@pytest.fixture
def wrapper(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSE_ATTN_CACHE_DIR", str(tmp_path / "cache"))
    return pypto_toolchain.install(tmp_path / "bin")


def compile_(wrapper, work, value=1, hash_=1, expr="2", flags=("-O2",)):
    work.mkdir(exist_ok=True)
    (work / "expr.h").write_text(f"/* Function info hash={hash_} */\n#define EXPR {expr}\n")
    (work / "k.cpp").write_text(SOURCE.format(hash=hash_, magic=hash_ * 7, value=value))
    subprocess.run([str(wrapper), *flags, "-S", str(work / "k.cpp"), "-o", str(work / "k.s")],
                   check=True)
    return (work / "k.s").read_text()


def cached(tmp_path):
    return sorted(p.name for p in (pypto_toolchain.cache_dir()).glob("*"))


def test_comment_only_differences_hit_the_cache(wrapper, tmp_path):
    first = compile_(wrapper, tmp_path / "a", hash_=1)
    entries = cached(tmp_path)
    assert len(entries) == 1
    again = compile_(wrapper, tmp_path / "b", hash_=99)
    assert cached(tmp_path) == entries and again == first


@pytest.mark.parametrize("change", [dict(value=5), dict(expr="3"), dict(flags=("-O0",))])
def test_code_header_or_flag_differences_compile_afresh(wrapper, tmp_path, change):
    first = compile_(wrapper, tmp_path / "a")
    other = compile_(wrapper, tmp_path / "b", **change)
    assert len(cached(tmp_path)) == 2
    if "flags" not in change:
        assert other != first


def test_a_call_without_output_or_input_runs_the_real_compiler(wrapper, tmp_path):
    res = subprocess.run([str(wrapper), "--version"], capture_output=True, text=True, check=True)
    assert "g++" in res.stdout or "GCC" in res.stdout
    assert not pypto_toolchain.cache_dir().exists() or not cached(tmp_path)


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("SPARSE_ATTN_PYPTO_GXX_CACHE", "0")
    assert not pypto_toolchain.enabled()
    monkeypatch.delenv("SPARSE_ATTN_PYPTO_GXX_CACHE")
    assert pypto_toolchain.enabled()
    assert os.access(shutil.which("g++"), os.X_OK)
