"""A content-addressed cache in front of the C++ compiler pypto runs on every simulated call.

pypto 0.2.0 generates the program's control flow as C++ on every call, even for a program
it compiled before, and runs ``g++`` on it four times (source to assembly, assembly to
object, for the flow and its expression table): about a third of a simulated call once the
performance model is off (measured). The generated sources of one program differ between
calls only in full-line comments (hashes and counters of pypto's graph), so the outputs
are cached under a key made of the command line (paths reduced to their suffix), the input
file and the headers beside it, each with full-line comments and ``.file`` directives
removed. Everything that can change the compiled code is in the key.

The worker puts :func:`install`'s directory first on ``PATH``; pypto runs ``g++`` through
``sh -c``, so the wrapper below is what it finds. The wrapper falls back to the real
compiler whenever it cannot tell the input or the output, and the cache is shared by every
worker of the machine (atomic renames).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sparse_attn_conformance.kernels.pypto.calculator import cache_root

_WRAPPER = r"""#!/bin/bash
# Written by kernels/pypto/toolchain.py: a content-addressed cache in front of g++.
real=@REAL@
cache=@CACHE@
out=""; src=""; prev=""; args=""
for a in "$@"; do
  if [ "$prev" = "-o" ]; then out="$a"
  elif [ "${a:0:1}" != "-" ] && [ -f "$a" ]; then src="$a"; args="$args <${a##*.}>"
  else args="$args $a"; fi
  prev="$a"
done
[ -n "$out" ] && [ -n "$src" ] || exec "$real" "$@"
shopt -s nullglob
case "$src" in */*) dir="${src%/*}" ;; *) dir=. ;; esac
# one awk over the source and its headers (header names included), one hash: this runs on
# every simulated call, so it spawns as few processes as it can
key=$( { printf '%s\n' "$args"
         awk -v src="$src" 'FNR == 1 && FILENAME != src { n = FILENAME; sub(/.*\//, "", n); print n }
              !/^[[:space:]]*\/\// && !/^[[:space:]]*\/\*.*\*\/[[:space:]]*$/ &&
              !/^[[:space:]]*\.file[[:space:]]/' "$src" "$dir"/*.h; } | sha256sum )
key=${key:0:40}
if [ -f "$cache/$key" ] && cp "$cache/$key" "$out" 2>/dev/null; then exit 0; fi
"$real" "$@" || exit $?
mkdir -p "$cache" && tmp=$(mktemp "$cache/.tmp.XXXXXX") && cp "$out" "$tmp" && mv -f "$tmp" "$cache/$key"
exit 0
"""


def cache_dir() -> Path:
    """Where compiled outputs are kept (under the per-machine cache, keyed by pypto version)."""
    from importlib import metadata

    return cache_root() / "gxx" / f"pypto-{metadata.version('pypto')}"


def install(bin_dir: Path) -> Path | None:
    """Write the ``g++`` wrapper into ``bin_dir`` and return it; None (nothing written)
    when there is no ``g++`` or no ``bash``, so pypto runs the compiler as it would."""
    real = shutil.which("g++")
    if real is None or shutil.which("bash") is None:
        return None
    bin_dir.mkdir(parents=True, exist_ok=True)
    wrapper = bin_dir / "g++"
    text = _WRAPPER.replace("@REAL@", _quote(real)).replace("@CACHE@", _quote(str(cache_dir())))
    wrapper.write_text(text)
    wrapper.chmod(0o755)
    return wrapper


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"


def enabled() -> bool:
    """The cache is on unless ``$SPARSE_ATTN_PYPTO_GXX_CACHE`` is ``0``."""
    return os.environ.get("SPARSE_ATTN_PYPTO_GXX_CACHE", "1") != "0"
