"""Plain NumPy twins of fastnn's compiled paths, written as the book writes them.

Each public name here has a fast counterpart of the same name and signature in ``fastnn``.
The twins are the oracle of the tests and the baseline of the benchmarks; the fast path never
imports them.  Where the book's code has a trap (integer labels shaped ``(N, 1)``, a single
1-D sample through ``Affine``), the twin implements fastnn's documented behaviour plainly, so
that it can serve as an oracle.
"""
