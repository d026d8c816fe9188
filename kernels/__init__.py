"""The kernels under test, one folder per family (`torch`, `pypto`, `triton`, the seeded
`faulty` ones and the `adapters` of third-party kernels); at the top, what every kernel is
(`interface`: the Protocol and what a kernel declares) and how a name becomes one
(`registry`)."""
