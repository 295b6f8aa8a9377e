"""RelayMD's benchmarks, a package run from the repository root: `python -m bench.<name>`.

Each one writes its section of docs/benchmarks.md (`bench._docs`). Stand-ins shared with the
tests (the fake login node, the testbed, the daemon's end-to-end helpers) are imported from
`tests.*`, their one home.
"""
