"""Drawing cases for the kernel under test: the strategies, restricted to what its
preconditions allow, within the profile's work budget. Properties draw inside the test
(`st.data()`) because the kernel, and so its preconditions, is only known once pytest has
parametrised the test."""

from __future__ import annotations

import dataclasses

from hypothesis import strategies as st
from hypothesis.errors import HypothesisException, StopTest

from sparse_attn_conformance.conformance import recorder
from sparse_attn_conformance.contracts import ContractError, Preconditions, formats
from sparse_attn_conformance.kernels.interface import KernelUnderTest
from sparse_attn_conformance.plugin import profiles
from sparse_attn_conformance.strategies.formats import in_format
from sparse_attn_conformance.strategies.v1 import cases as v1_cases


def cases_of(kernel: KernelUnderTest):
    """The composed strategy of the kernel's calling convention."""
    if kernel.convention == "v2":
        from sparse_attn_conformance.strategies.v2 import cases as v2_cases

        return v2_cases.cases
    return v1_cases.cases


def format_preconditions(pre: Preconditions, kv_format: str) -> Preconditions:
    """`pre` with q's D fixed to what cache format `kv_format` stores (section 12); a
    kernel whose declared D excludes it gets a `ContractError` naming both."""
    D = formats.key_dims(kv_format)
    if D is None:
        return pre
    declared = pre.dims.get("D")
    if declared is not None and D not in declared:
        raise ContractError(f"kv_format {kv_format!r}: its rows have D={D}, but the kernel "
                            f"declares Preconditions.dims['D'] = {tuple(declared)}")
    return dataclasses.replace(pre, dims={**pre.dims, "D": (D,)})


def draw_case(data: st.DataObject, kernel: KernelUnderTest, label: str = "case",
              **kw):
    """One case of the kernel's calling convention meeting its preconditions (keyword
    arguments go to that convention's `cases`: `strategies.v1.cases.cases` for v1,
    `strategies.v2.cases.cases` for v2), in one of the cache formats the kernel reads
    (`strategies.formats.in_format`; a case of another case's `config` keeps its format).
    A draw that Hypothesis discards (its data ran out, or a strategy rejected it) is
    counted in the report's `rejected`."""
    try:
        kv_format = kw.pop("kv_format", None) or (
            kernel.kv_formats[0] if len(kernel.kv_formats) == 1
            else data.draw(st.sampled_from(kernel.kv_formats), label="kv_format"))
        pre = format_preconditions(kernel.pre, kv_format)
        if kw.get("fixed") and formats.key_dims(kv_format) is not None:
            # a shape taken whole (the model's) in a format that fixes D: the format's D
            kw["fixed"] = {**kw["fixed"], "D": formats.key_dims(kv_format)}
        case = data.draw(cases_of(kernel)(pre, budget=profiles.budget(), **kw), label=label)
        if kv_format != formats.BF16:
            case = data.draw(in_format(case, kv_format), label=f"{label} in {kv_format}")
        return case
    except (HypothesisException, StopTest):
        recorder.note_rejected()
        raise

