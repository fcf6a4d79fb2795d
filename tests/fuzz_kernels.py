"""Coverage-guided fuzzing of fastnn's public entry points with atheris (libFuzzer).

Not a pytest module (pytest collects test_*.py only) and not run in CI: atheris is an
optional tool (``pip install atheris``).  It complements tests/test_fuzz.py, which compares
with the NumPy twins over a bounded number of hypothesis examples: this harness runs for as
long as it is given, guided by the coverage of fastnn's Python layer (the validation that
stands in front of every kernel), and checks the contract that matters for memory safety:
every input is answered with a result or a ``ValueError``/``TypeError``, never another
exception, a crash or a sanitizer report.

    python tests/fuzz_kernels.py -atheris_runs=200000          # plain build
    python tests/fuzz_kernels.py -max_total_time=600 corpus/   # keep a corpus

For memory errors in the kernels, run it against the sanitized build of tests/sanitize.sh
(same LD_PRELOAD and ASAN_OPTIONS, PYTHONPATH at the sanitized copy).  gcc's libasan
preloaded so takes the place of atheris's own runtime: the inputs then come unguided (random
mutations, no coverage feedback), which still exercises every entry point; guided fuzzing
under ASan needs a clang build and atheris's ``asan_with_fuzzer.so``.
"""
import sys

import atheris
import numpy as np

with atheris.instrument_imports(include=["fastnn"]):
    import fastnn.functions as F
    import fastnn.gradient as G
    import fastnn.layers as L
    import fastnn.nets as N
    import fastnn.optim as O

DTYPES = [np.float64, np.float32, np.float16, np.int8, np.int64, np.uint8, np.bool_,
          np.complex128, object, ">f8"]


def draw_array(fdp, max_dims=3):
    ndim = fdp.ConsumeIntInRange(0, max_dims)
    shape = tuple(fdp.ConsumeIntInRange(0, 5) for _ in range(ndim))
    size = int(np.prod(shape))
    values = np.array(fdp.ConsumeFloatListInRange(size, -1e300, 1e300) if fdp.ConsumeBool()
                      else fdp.ConsumeFloatList(size), dtype=np.float64)
    values = np.resize(values, size).reshape(shape) if size else np.zeros(shape)
    dtype = DTYPES[fdp.ConsumeIntInRange(0, len(DTYPES) - 1)]
    with np.errstate(all="ignore"):
        a = values.astype(dtype)
    layout = fdp.ConsumeIntInRange(0, 4)
    if layout == 1 and a.ndim:
        a = np.asfortranarray(a)
    elif layout == 2 and a.ndim:
        a = np.repeat(a, 2, axis=-1)[..., ::2]
    elif layout == 3:
        a = a.copy()
        a.flags.writeable = False
    elif layout == 4:
        a = a.tolist()
    return a


def draw_labels(fdp, n, k):
    shape = [(n,), (n, 1), ()][fdp.ConsumeIntInRange(0, 2)]
    values = np.array([fdp.ConsumeIntInRange(-2, k + 1) for _ in range(int(np.prod(shape)))],
                      dtype=np.int64)
    return values.astype([np.int64, np.uint8, np.int8][fdp.ConsumeIntInRange(0, 2)]).reshape(shape)


def run_one(fdp):
    choice = fdp.ConsumeIntInRange(0, 13)
    if choice == 0:
        F.sigmoid(draw_array(fdp))
    elif choice == 1:
        F.softmax(draw_array(fdp))
    elif choice == 2:
        F.relu_grad(draw_array(fdp))
    elif choice == 3:
        y = draw_array(fdp, 2)
        n, k = (np.shape(y) + (1, 1))[:2]
        t = draw_labels(fdp, n, k) if fdp.ConsumeBool() else draw_array(fdp, 2)
        [F.cross_entropy_error, F.softmax_loss][fdp.ConsumeIntInRange(0, 1)](
            y, t, exact=fdp.ConsumeBool())
    elif choice == 4:
        F.sum_squared_error(draw_array(fdp), draw_array(fdp))
    elif choice == 5:
        F.binary_cross_entropy(draw_array(fdp), draw_array(fdp), from_logits=fdp.ConsumeBool())
    elif choice == 6:
        F.one_hot(draw_labels(fdp, 3, 4), fdp.ConsumeIntInRange(-1, 5))
    elif choice in (7, 8):
        layer = (L.Affine if choice == 7 else L.Linear)(draw_array(fdp, 2), draw_array(fdp, 1))
        layer.forward(draw_array(fdp))
        layer.backward(draw_array(fdp, 2), compute_dx=fdp.ConsumeBool())
    elif choice == 9:
        layer = [L.Relu, L.Sigmoid][fdp.ConsumeIntInRange(0, 1)]()
        layer.forward(draw_array(fdp))
        layer.backward(draw_array(fdp))
    elif choice == 10:
        layer = L.SoftmaxWithLoss(exact=fdp.ConsumeBool())
        x = draw_array(fdp, 2)
        n, k = (np.shape(x) + (1, 1))[:2]
        layer.forward(x, draw_labels(fdp, n, k) if fdp.ConsumeBool() else draw_array(fdp, 2))
        layer.backward(fdp.ConsumeRegularFloat())
    elif choice == 11:
        d, h, k = (fdp.ConsumeIntInRange(1, 4) for _ in range(3))
        net = N.MultiLayerNet(d, [h], k, ["relu", "sigmoid", "identity"][fdp.ConsumeIntInRange(0, 2)],
                              dtype=[np.float32, np.float64][fdp.ConsumeIntInRange(0, 1)], rng=0)
        x = draw_array(fdp, 2)
        n = (np.shape(x) + (1,))[0]
        t = draw_labels(fdp, n, k) if fdp.ConsumeBool() else draw_array(fdp, 2)
        [net.predict, lambda x: net.gradient(x, t), lambda x: net.loss(x, t),
         lambda x: net.accuracy(x, t)][fdp.ConsumeIntInRange(0, 3)](x)
    elif choice == 12:
        p = draw_array(fdp)
        optimizer = O.get_optimizer(list(O.OPTIMIZERS)[fdp.ConsumeIntInRange(0, 5)])
        optimizer.update({"p": p}, {"p": draw_array(fdp)})
    else:
        d, k = fdp.ConsumeIntInRange(1, 3), fdp.ConsumeIntInRange(1, 3)
        G.network_numerical_gradient([draw_array(fdp, 2), draw_array(fdp, 2)],
                                     [draw_array(fdp, 1), draw_array(fdp, 1)],
                                     draw_array(fdp, 2), draw_labels(fdp, d, k))


def test_one_input(data):
    fdp = atheris.FuzzedDataProvider(data)
    try:
        with np.errstate(all="ignore"):
            run_one(fdp)
    except (ValueError, TypeError) as exc:
        if not str(exc):
            raise AssertionError(f"{type(exc).__name__} without a message") from exc


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
