"""pytest-benchmark: the network family's registered pairs (fastnn.registry) beside their twins.

Run with ``python -m pytest benchmarks/ --benchmark-only``; nothing here asserts on time.
"""
FAMILY = "network"


def test_pair(pair_benchmark):
    pair_benchmark()
