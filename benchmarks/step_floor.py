"""How close the TwoLayerNet training step is to this machine's floor, in one process.

The floor is the arithmetic the step cannot avoid: its two large products, x @ W1 (forward)
and x.T @ dz1 (the first layer's weight gradient), on the step's batch of MNIST-like images
(fastnn.benchmark's), in the step's dtype: as NumPy's dense GEMMs run them, and over the
batch's nonzeros as fastnn's step runs them (fastnn._kernels._sparse.matmul and matmul_tn,
each compressing the batch: once more than the step does).  Printed beside fastnn's step
(gradient + SGD update) and PyTorch's where installed, as medians of interleaved rounds
(fastnn.benchmark.median_time), all on the same thread count.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/step_floor.py [threads]
"""
import sys

import numpy as np

from fastnn._kernels import _sparse
from fastnn.benchmark import (_mnist_like, _two_layer, environment, format_environment,
                              median_time, same_threads)


def main(threads=1, batch=100, rounds=15):
    rng = np.random.default_rng(0)
    with same_threads(threads):
        print(format_environment(environment()))
        print("| dtype | fastnn step | dense GEMM floor | sparse floor | fastnn / sparse floor "
              "| book step | PyTorch step |")
        print("|---|---|---|---|---|---|---|")
        for dtype in (np.float32, np.float64):
            case = _two_layer(batch, dtype, rng)
            x = _mnist_like(rng, batch)[0].astype(dtype)
            W1 = (0.01 * rng.standard_normal((784, 50))).astype(dtype)
            dz1 = rng.standard_normal((batch, 50)).astype(dtype)
            out, dW1 = np.empty((batch, 50), dtype), np.empty((784, 50), dtype)
            buffers = _sparse.Buffers(batch, 784, dtype)

            def sparse():
                assert _sparse.matmul(x, W1, out, buffers)
                assert _sparse.matmul_tn(x, dz1, dW1, buffers)
            fns = [case.fastnn, lambda: (x @ W1, x.T @ dz1), sparse, case.reference]
            if case.torch:
                fns.append(case.torch)
            times = median_time(fns, rounds=rounds, min_time=0.05)
            us = [f"{1e6 * t:.0f} us" for t in times] + ["-"]
            print(f"| {np.dtype(dtype).name} | {us[0]} | {us[1]} | {us[2]} | "
                  f"{times[0] / times[2]:.2f} | {us[3]} | {us[4]} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
