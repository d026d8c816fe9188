"""The input domain a run covers, of both conventions: the corners the report counts
(`CORNERS`), which ones a drawn case hits (`corners`, by the case's convention; each
convention names its own in `strategies.v1.coverage` and `strategies.v2.coverage`), and
what a kernel's preconditions leave out (`unexercised`)."""

from __future__ import annotations

from sparse_attn_conformance.contracts import Preconditions
from sparse_attn_conformance.strategies import edges as v1_edges
from sparse_attn_conformance.strategies.v1.coverage import V1_CORNERS
from sparse_attn_conformance.strategies.v1.coverage import corners as v1_corners
from sparse_attn_conformance.strategies.v2 import edges as v2_edges
from sparse_attn_conformance.strategies.v2.corners import V2_CORNERS
from sparse_attn_conformance.strategies.v2.coverage import corners as v2_corners

#: Every corner the report counts: v1's first, then those only v2 cases reach.
CORNERS: dict[str, str] = {**V1_CORNERS, **{k: v for k, v in V2_CORNERS.items()
                                            if k not in V1_CORNERS}}


def corners(case) -> list[str]:
    """The corners `case` (a v1 or v2 case) hits, in its convention's order."""
    if getattr(case.inputs, "CONVENTION", "v1") == "v2":
        return v2_corners(case)
    return v1_corners(case)


def unexercised(pre: Preconditions, convention: str | None = None) -> list[str]:
    """What a kernel's preconditions leave out of the contract, in words: what they declare
    (`Preconditions.unexercised`), then each integer edge mode they exclude
    (strategies/edges.py, strategies/v2/edges.py) with the declaration that excludes it, for
    `convention` ("v1", "v2"; None: both, once each)."""
    out = pre.unexercised()
    for name, module in {"v1": v1_edges, "v2": v2_edges}.items():
        if convention not in (None, name):
            continue
        for mode, why in module.excluded(pre).items():
            line = f"integer edge {mode!r} ({module.EDGE_WHAT[mode]}): excluded by {why}"
            if line not in out:
                out.append(line)
    return out
