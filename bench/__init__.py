"""fluxmix benchmarks: every figure next to a raw baseline measured in the same run.

Run from the repository root: `python -m bench all [--quick] [--json bench/out/results.json]`.
Not part of the installed package; see bench/RESULTS.md for the last recorded run.
"""
