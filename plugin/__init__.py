"""The suite's pytest plugin (entry point `sparse_attn_conformance` =
`sparse_attn_conformance.plugin.entry`): its
options and on/off switch, the kernels under test and their conventions (`selection`), the
Hypothesis profiles and work budgets (`profiles`), the reports (`reporting`), replay
(`replay`), the feature markers (`features`), each worker's share of the cores (`cores`)."""
