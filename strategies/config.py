"""Configuration draws: the shape and model parameters of one call."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from kernels.contract import Preconditions

#: Values drawn per dimension when a kernel does not restrict it. The first value is the one
#: Hypothesis shrinks towards, so each list starts with the simplest.
DEFAULT_DIMS: dict[str, tuple[int, ...]] = {
    "B": tuple(range(1, 9)),
    "S": (1, 2, 3, 4),
    "H": (1, 2, 4, 8),
    "D": (8, 16, 32, 64, 512),
    "WIN": (4, 1, 2, 3, 8, 16, 32, 128),
    "IDX_TOPK": (0, 1, 2, 4, 8, 16, 64, 512),
    "BLOCK": (4, 1, 2, 3, 8, 16, 64, 128, 256),
}

#: Compress ratios: 0 is the window-only (SWA) path, 4 is CSA's and 128 HCA's in the model.
RATIOS = (0, 4, 128, 1, 2, 3, 8)


@dataclass(frozen=True)
class Config:
    """The shape and model parameters of one call."""

    B: int
    S: int
    H: int
    D: int
    WIN: int
    IDX_TOPK: int
    BLOCK: int
    ratio: int
    softmax_scale: float

    @property
    def TOPK(self) -> int:
        return self.WIN + self.IDX_TOPK


def dim_values(name: str, pre: Preconditions) -> tuple[int, ...]:
    """The values of one dimension that the strategies may draw under `pre`."""
    return tuple(pre.dims.get(name, DEFAULT_DIMS[name]))


@st.composite
def configs(draw, pre: Preconditions = Preconditions(), ratios=RATIOS) -> Config:
    """A `Config` within the kernel's declared dims.

    The scale is `D**-0.5` times a drawn factor, so a kernel that ignores the given scale
    and uses its own `1/sqrt(D)` is wrong on most examples.
    """
    dims = {name: draw(st.sampled_from(dim_values(name, pre)), label=name)
            for name in DEFAULT_DIMS}
    ratio = draw(st.sampled_from(ratios), label="ratio")
    factor = draw(st.sampled_from((1.0, 0.5, 2.0, 0.125, 3.0)), label="scale_factor")
    return Config(ratio=ratio, softmax_scale=factor * dims["D"] ** -0.5, **dims)
