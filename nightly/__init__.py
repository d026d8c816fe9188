"""Running the suite at scale and measuring it: one NPU card per xdist worker (`npu_pool`),
shards balanced by measured durations (`sharding`), another machine's failures replayed
(`example_db`), strict known failures (`known_failures`), and the kill-rate run over the
seeded faulty kernels (`killrate`, `python -m sparse_attn_conformance.nightly.killrate`)."""
