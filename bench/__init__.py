"""optout's benchmark suite: ``python -m bench [--quick] [--json]`` from the repository root.

Every figure is a ratio of two things measured side by side in one run (interleaved, repeated, median
taken), because the machines this runs on are shared and noisy; nothing here asserts on time. One
module per measurement; :mod:`bench.common` holds what they share. See docs/performance.md.
"""
