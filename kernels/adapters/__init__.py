"""Adapters of kernels nobody here wrote, each calling a published package's kernel in the
suite's calling convention, nothing of theirs copied: FlashMLA (`flashmla`, `flashmla_fp8`),
sglang's Triton kernels (`sglang`, `sglang_v4`), vLLM's (`vllm`) and flashinfer's reference
for the V4 FP8 cache (`flashinfer`). Their verdicts are in docs/findings/."""
