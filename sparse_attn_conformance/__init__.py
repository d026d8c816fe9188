"""sparse-attn-conformance: a property-based conformance suite for DeepSeek-V4 sparse decode
attention kernels.

The one import package the suite installs. Its parts live in the repository's top-level
folders, mapped here by `package-dir` in pyproject.toml: `attention` (the shared core),
`contracts` (the calling conventions and cache formats), `strategies` (Hypothesis),
`conformance` (the properties), `kernels` (kernels under test), `plugin` (pytest),
`reports`, `nightly`. docs/architecture.md draws how a case flows through them.

Run it from any project: `pytest --pyargs sparse_attn_conformance --kernel=my.module:fn`.
"""

__version__ = "0.1.0"
