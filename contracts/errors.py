"""The one error every calling convention raises for input it does not allow."""

from __future__ import annotations


class ContractError(ValueError):
    """An input that breaks a calling convention (docs/contract.md): the message names the
    argument, what was expected and what came."""


def expect(cond: bool, name: str, expected: str, got) -> None:
    """Raise `ContractError` naming `name`, what was `expected` and what it `got`, unless `cond`."""
    if not cond:
        raise ContractError(f"{name}: expected {expected}, got {got}")


def tensor(name: str, value, dtype, ndim: int):
    """`value`, checked to be a torch tensor of `dtype` with `ndim` dimensions."""
    import torch

    expect(isinstance(value, torch.Tensor), name, "a torch.Tensor", type(value).__name__)
    expect(value.dtype == dtype, name, f"dtype {dtype}", value.dtype)
    expect(value.dim() == ndim, name, f"{ndim} dimensions", f"shape {tuple(value.shape)}")
    return value


def python_int(name: str, value, lo: int) -> int:
    """`value`, checked to be a Python int (not a bool) `>= lo`."""
    expect(isinstance(value, int) and not isinstance(value, bool) and value >= lo,
           name, f"an int >= {lo}", repr(value))
    return value
