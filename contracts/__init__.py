"""The calling conventions a kernel may be written against, each a front end onto the shared
core (`attention`): what its arguments are, how they are validated, and which rows each
token attends to (docs/contract.md).

- `contracts.v1`: the seed's (`seqused_kv` per batch, per-token lengths derived in the
  kernel, one index row read by value), sections 1-7;
- `contracts.v2`: what upstream kernels take today (per-token physical window rows,
  compressed slot ids cut by `position_ids` and the compress ratio), sections 8-11.

A kernel declares its convention with an attribute `convention` ("v1" when absent); the
suite's `--contract` overrides it for the kernels of a run.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from sparse_attn_conformance.contracts import formats
from sparse_attn_conformance.contracts.checks import ContractError
from sparse_attn_conformance.contracts.preconditions import DIMS, DOMAIN_LIMIT_LOG2, Preconditions

#: The conventions, oldest first; a kernel that declares none is taken as the first.
CONVENTIONS = ("v1", "v2")
DEFAULT_CONVENTION = "v1"

__all__ = ["CONVENTIONS", "DEFAULT_CONVENTION", "DIMS", "DOMAIN_LIMIT_LOG2", "ContractError",
           "Preconditions", "formats", "front_end", "of"]


def front_end(name: str) -> ModuleType:
    """The module of convention `name` (`contracts.v1` or `contracts.v2`)."""
    if name not in CONVENTIONS:
        raise ContractError(f"convention: expected one of {CONVENTIONS}, got {name!r}")
    return importlib.import_module(f"{__name__}.{name}")


def of(inputs) -> ModuleType:
    """The module of the convention a call's `Inputs` belong to."""
    return front_end(inputs.CONVENTION)
