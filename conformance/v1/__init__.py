"""The properties of calling convention v1 alone (docs/contract.md sections 1-7: lengths
derived from `seqused_kv`, ring slots behind `ori_block_table`, one index row read by
value), and the derived calls they make (views, poisoned rows, row provenance, the seed's
regression fixture). They run on the kernels of the run that are v1 kernels."""
