"""DataBuild's benchmarks (SPEC §4, issue 5): measure, never assert.

Run them all with ``.venv/bin/python -m bench`` from the repository root; each scenario
module also runs alone (``.venv/bin/python -m bench.cold_build``). docs/performance.md
explains every figure.
"""
