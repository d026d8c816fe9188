"""The shared core of every calling convention: what a token attends to (`Attended`: per
token a multiset of live rows, with its query, the sink and the scale), the contract's
output computed from it (`reference`), and the comparison of a kernel's output with it
(`compare`). A convention (`contracts.v1`, `contracts.v2`) is a front end that says which
rows each token attends to; nothing here knows how a convention addresses them."""

from sparse_attn_conformance.attention.attended import Attended

__all__ = ["Attended"]
