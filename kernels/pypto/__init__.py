"""The pypto kernels (Ascend NPUs; on a CPU, pypto's interpreter): the programs (`program`,
`v2_program`), the kernels that call them (`kernel`, `v2_kernel`), the isolated worker that
runs every call (`runtime` client, `worker` child), the NPU card pool (`pool`), the fixes
pypto 0.2.0 needs (`compat`), its toolchain probe (`toolchain`) and the scalar calculator
(`calculator`)."""
