"""How close the TwoLayerNet training step is to this machine's floor, in one process.

The floor is the arithmetic the step cannot avoid: its two large GEMMs, x @ W1 (forward) and
x.T @ dz1 (the first layer's weight gradient), timed as NumPy runs them, in the step's dtype.
Printed beside fastnn's step (gradient + SGD update) and PyTorch's where installed, as
medians of interleaved rounds (fastnn.benchmark.median_time), all on the same thread count.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/step_floor.py [threads]
"""
import sys

import numpy as np

from fastnn.benchmark import _two_layer, format_environment, environment, median_time, same_threads


def main(threads=1, batch=100, rounds=15):
    rng = np.random.default_rng(0)
    with same_threads(threads):
        print(format_environment(environment()))
        print(f"| dtype | fastnn step | GEMM floor | fastnn / floor | book step | PyTorch step |")
        print("|---|---|---|---|---|---|")
        for dtype in (np.float32, np.float64):
            case = _two_layer(batch, dtype, rng)
            x = rng.random((batch, 784)).astype(dtype)
            W1 = (0.01 * rng.standard_normal((784, 50))).astype(dtype)
            dz1 = rng.standard_normal((batch, 50)).astype(dtype)
            fns = [case.fastnn, lambda: (x @ W1, x.T @ dz1), case.reference]
            if case.torch:
                fns.append(case.torch)
            times = median_time(fns, rounds=rounds, min_time=0.05)
            torch = f"{1e6 * times[3]:.0f} us" if case.torch else "-"
            print(f"| {np.dtype(dtype).name} | {1e6 * times[0]:.0f} us | {1e6 * times[1]:.0f} us | "
                  f"{times[0] / times[1]:.2f} | {1e6 * times[2]:.0f} us | {torch} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
