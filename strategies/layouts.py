"""Memory layouts of a call's tensor arguments (contracts/layout.py): contiguous or not.

`layouts(tensors)` draws an `Inputs.layout` mapping for given tensors: most often all
contiguous (the empty mapping, which is also what it shrinks to), sometimes one argument in
a non-contiguous kind, sometimes several. Each argument gets only a kind that applies to its
tensor (`contracts.layout.applicable_kinds`: ``expanded`` needs values constant along a
dimension, ``transposed`` two dimensions of size > 1, ...).

It makes at most one Hypothesis choice per tensor argument plus one, whatever the tensors'
sizes, so it can be drawn once per example on top of large inputs::

    @st.composite
    def laid_out_cases(draw):
        case = draw(cases())
        layout = draw(layouts(case.inputs))
        return dataclasses.replace(case, inputs=case.inputs.replace(layout=layout))

or, for bare inputs, `laid_out(inputs)`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from hypothesis import strategies as st

from sparse_attn_conformance.contracts.inputs import LaidOut
from sparse_attn_conformance.contracts.layout import KINDS, applicable_kinds

#: Out of the first choice's 8 values: 0-3 all contiguous, 4-6 one argument, 7 several.
_MODES = 8
_ONE, _SEVERAL = 4, 7


def _tensors(tensors: LaidOut | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # any convention's Inputs (contracts.inputs.LaidOut): its own arguments, in its order
    if isinstance(tensors, LaidOut):
        tensors = {a: getattr(tensors, a) for a in tensors.ARGUMENTS}
    return {a: t for a, t in tensors.items() if isinstance(t, torch.Tensor)}


@st.composite
def layouts(draw, tensors: LaidOut | Mapping[str, torch.Tensor],
            kinds: tuple[str, ...] = KINDS) -> dict[str, str]:
    """A layout mapping `{argument: kind}` for `tensors` (any convention's `Inputs`, or a
    mapping from argument name to tensor; non-tensor values are skipped), with kinds from `kinds` that
    apply to each tensor. ``contiguous`` arguments are left out, so all contiguous is `{}`.

    Half the draws are `{}`; about three in eight lay out one argument (any applicable
    `(argument, kind)` pair); one in eight gives each argument its own kind, possibly
    contiguous. Shrinks to `{}`, then towards fewer arguments and earlier kinds.
    """
    mode = draw(st.integers(0, _MODES - 1))
    if mode < _ONE:
        return {}
    options = {a: [k for k in applicable_kinds(t) if k != "contiguous" and k in kinds]
               for a, t in _tensors(tensors).items()}
    if mode < _SEVERAL:
        pairs = [(a, k) for a, ks in options.items() for k in ks]
        if not pairs:
            return {}
        a, k = pairs[draw(st.integers(0, len(pairs) - 1))]
        return {a: k}
    out = {}
    for a, ks in options.items():
        if ks:
            i = draw(st.integers(0, len(ks)))
            if i:
                out[a] = ks[i - 1]
    return out


def laid_out(inputs: LaidOut, kinds: tuple[str, ...] = KINDS):
    """`inputs` with a drawn layout (`layouts`), replacing any it had."""
    return layouts(inputs, kinds).map(lambda layout: inputs.replace(layout=layout))
