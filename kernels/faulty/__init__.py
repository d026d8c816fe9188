"""The seeded faulty kernels, each one bug of a class a real kernel has: calling convention
v1 (`v1`), v2 (`v2`), the FP8 cache formats (`fp8`) and the LSE output (`lse`). The suite
must kill every one of them (`python -m sparse_attn_conformance.nightly.killrate`)."""
