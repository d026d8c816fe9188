"""What a kernel may require beyond its calling convention (`Preconditions`), shared by the
conventions, and the configuration dimensions it may restrict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sparse_attn_conformance.contracts.checks import ContractError

#: Configuration dimensions a kernel may restrict with `Preconditions.dims`.
DIMS = ("B", "S", "H", "D", "WIN", "IDX_TOPK", "BLOCK")

#: The numerical domain (docs/contract.md section 5): a kernel must be exact when every
#: live key's `sum_d |q_d k_d| * max(1, |softmax_scale|)` and every `|v| * TOPK` is at most
#: 2^DOMAIN_LIMIT_LOG2, well inside fp32 (2^128), so every logit and partial sum is
#: representable in fp32 whatever the summation order.
DOMAIN_LIMIT_LOG2 = 120


@dataclass(frozen=True)
class Preconditions:
    """What a kernel requires beyond the contract; the strategies draw only inputs meeting it.

    Fields for either calling convention:

    finite_sinks: no `+inf`/`-inf` sinks.
    dims: allowed values per configuration dimension (keys from `DIMS`).
    shapes: whole shapes the kernel also takes outside `dims` (each a mapping from some
        keys of `DIMS` to one value), such as the model's attention shape for a kernel
        compiled per shape. The general strategies never draw them (one may cost minutes
        in a simulator); a property that asks for such a shape (`accepts`) gets it.
    note: why, in the kernel author's words; shown in reports.

    v1 only (docs/contract.md section 6):

    canonical_rows: index rows only as the model writes them (window part `arange`, the
        compressed entries first and all live for the token, `-1` tail), shared by the
        batch's tokens.
    max_seqused: the largest `seqused_kv` the kernel takes (a bound on context length;
        lengths the model writes never exceed `WIN + IDX_TOPK`).

    v2 only (docs/contract.md section 9, the preconditions upstream's kernels have):

    finite_row0: flat row 0 of `ori_kv` is finite (P3: ignored lanes gather it).
    canonical_windows: every window row is exactly the producer's window for the token's
        position (P6: Flash builds gather the window in page runs derived from positions).
    max_position: the largest `position_ids` value, and with it the largest compressed
        slot id, the kernel takes (P4: `2**24 - 1` for a cut computed in fp32).
    max_cmp_columns: the widest `cmp_block_table` (`M`) the kernel takes, and so live
        compressed slots below `max_cmp_columns * BLOCK` (a kernel compiled for a table
        width); positions stay free.
    """

    canonical_rows: bool = False
    finite_sinks: bool = False
    dims: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    max_seqused: int | None = None
    shapes: tuple[Mapping[str, int], ...] = ()
    note: str = ""
    finite_row0: bool = False
    canonical_windows: bool = False
    max_position: int | None = None
    max_cmp_columns: int | None = None

    def __post_init__(self):
        for key, values in self.dims.items():
            if key not in DIMS:
                raise ContractError(f"Preconditions.dims: expected keys among {DIMS}, got {key!r}")
            if not values or not all(isinstance(v, int) for v in values):
                raise ContractError(
                    f"Preconditions.dims[{key!r}]: expected a non-empty tuple of ints, "
                    f"got {values!r}"
                )
        for shape in self.shapes:
            if not isinstance(shape, Mapping) or not shape or any(
                    k not in DIMS or not isinstance(v, int) for k, v in shape.items()):
                raise ContractError(f"Preconditions.shapes: expected mappings from keys among "
                                    f"{DIMS} to ints, got {shape!r}")
        if self.max_seqused is not None and (
                not isinstance(self.max_seqused, int) or self.max_seqused < 0):
            raise ContractError(f"Preconditions.max_seqused: expected None or an int >= 0, "
                                f"got {self.max_seqused!r}")
        if self.max_cmp_columns is not None and (
                not isinstance(self.max_cmp_columns, int) or self.max_cmp_columns < 1):
            raise ContractError(f"Preconditions.max_cmp_columns: expected None or an int >= 1, "
                                f"got {self.max_cmp_columns!r}")
        if self.max_position is not None and (
                not isinstance(self.max_position, int) or self.max_position < 0):
            raise ContractError(f"Preconditions.max_position: expected None or an int >= 0, "
                                f"got {self.max_position!r}")

    def accepts(self, dims: Mapping[str, int]) -> bool:
        """Whether a configuration fixing `dims` (other dimensions free) meets these
        preconditions: every value within `dims`, or the values one of `shapes` names taken
        from it and the rest within `dims`."""
        def within(keys) -> bool:
            return all(k not in self.dims or dims[k] in self.dims[k] for k in keys)

        if within(dims):
            return True
        return any(all(dims.get(k) == v for k, v in shape.items())
                   and within(k for k in dims if k not in shape) for shape in self.shapes)

    def unexercised(self) -> list[str]:
        """The parts of the contract these preconditions leave out, in words (the integer
        edge modes they exclude too: `strategies.coverage.unexercised`)."""
        out = []
        if self.canonical_rows:
            out.append("adversarial index rows (pads, shuffles, duplicates, garbage, boundaries)")
            out.append("index-row permutation invariance")
        if self.finite_sinks:
            out.append("infinite sinks")
        for key, values in self.dims.items():
            out.append(f"{key} outside {tuple(values)}")
        if self.max_seqused is not None:
            out.append(f"seqused_kv above {self.max_seqused} (long context)")
        if self.finite_row0:
            out.append("a non-finite flat row 0 of ori_kv")
        if self.canonical_windows:
            out.append("window rows other than the producer's (adversarial window lanes)")
        if self.max_position is not None:
            out.append(f"positions and compressed slot ids above {self.max_position}")
        if self.max_cmp_columns is not None:
            out.append(f"compressed block tables wider than {self.max_cmp_columns} columns "
                       f"(live slots past {self.max_cmp_columns} * BLOCK)")
        return out
