"""The call a kernel got, told in a failure: every argument as passed to the kernel, which
of them a property changed from the drawn case, and the property's change in one line.

A property often calls the kernel on a transformation of the drawn case (the sinks set to
-inf, `q` zeroed, rows poisoned, lanes rewritten); the drawn case alone would mislead the
kernel's author about what the kernel saw.
"""

from __future__ import annotations

import torch

from sparse_attn_conformance.contracts import formats

#: A tensor with at most this many elements is printed whole.
WHOLE = 32
#: Otherwise its first values are printed, and its range.
HEAD = 8


def arguments(inputs) -> dict:
    """A convention's `Inputs` as the arguments of a call, without copying a tensor."""
    return {name: getattr(inputs, name) for name in inputs.call_arguments()}


def _same(a, b) -> bool:
    if a is b:
        return True
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        # bit for bit: NaN payloads and -0 count, and NaN equals itself
        return torch.equal(formats.as_bytes(a.detach().cpu().reshape(-1)),
                           formats.as_bytes(b.detach().cpu().reshape(-1)))
    return type(a) is type(b) and a == b


def changed(args: dict, drawn: dict) -> list[str]:
    """The names of the arguments of `args` that differ from `drawn` (bit for bit)."""
    return [n for n, v in args.items() if n not in drawn or not _same(v, drawn[n])]


def _value(x: float) -> str:
    return f"{x:.5g}"


def _tensor(t: torch.Tensor) -> str:
    t = t.detach().cpu()
    head = f"{str(t.dtype).removeprefix('torch.')} {list(t.shape)}"
    if t.dim() == 3 and t.element_size() == 1:
        name = formats.of_pool(t)
        if name in formats.FORMATS:
            return f"{head} ({name} rows; values as the reference decodes them)"
    flat = t.reshape(-1)
    if flat.numel() == 0:
        return f"{head} (empty)"
    if t.is_floating_point():
        vals = flat.double()
        shown = ", ".join(_value(float(v)) for v in vals[:WHOLE if flat.numel() <= WHOLE else HEAD])
        if flat.numel() <= WHOLE:
            return f"{head} = [{shown}]"
        finite = vals[torch.isfinite(vals)]
        rng = (f"finite in [{_value(float(finite.min()))}, {_value(float(finite.max()))}]"
               if finite.numel() else "no finite value")
        bad = vals.numel() - finite.numel()
        return (f"{head} = [{shown}, ...]; {rng}" + (f", {bad} non-finite" if bad else ""))
    if flat.numel() <= WHOLE:
        return f"{head} = {flat.tolist()}"
    return (f"{head} = {flat[:HEAD].tolist()[:-1]}...; in [{int(flat.min())}, "
            f"{int(flat.max())}]")


def describe(args: dict, drawn: dict | None = None, transform: str | None = None) -> str:
    """Every argument of a call, one line each, those that differ from `drawn` marked;
    the first line names what the property changed (`transform`, else the changed
    arguments' names)."""
    diff = changed(args, drawn) if drawn is not None else []
    if transform:
        first = f"the property's change to the drawn case: {transform}"
    elif diff:
        first = f"the property changed {', '.join(diff)} from the drawn case"
    else:
        first = "the drawn case's arguments, unchanged"
    lines = [first]
    for name, value in args.items():
        mark = "*" if name in diff else " "
        text = _tensor(value) if isinstance(value, torch.Tensor) else repr(value)
        lines.append(f" {mark} {name}: {text}")
    if diff:
        lines.append(" (* differs from the drawn case)")
    return "\n".join(lines)
