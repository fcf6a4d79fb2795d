"""bfloat16 mixed precision on the convolutional networks (precision="bf16" on SimpleConvNet and
DeepConvNet, fastnn/_kernels/_convnet.pyx): both paths of the compiled Plan (im2col + GEMM,
and the direct convolution) against the bf16 twins (fastnn.reference.conv.Bf16Convolution,
fastnn.reference.layers.Bf16Affine), the networks, layouts, training, and bad input.

How close fast and twin can be held (fastnn.registry, BF16_STEP_TOLERANCE, says why): both
round the same operands, but an intermediate value (a layer's input, a delta) that the two
compute in different orders, a few float32 ulps apart, and that lies that close to a midpoint
between two bfloat16 values, is rounded to neighbours on the two sides: one bfloat16 ulp
(2**-8) apart.  Where that is rare (a few images, small layers) the passes are held to a
thousandth of what the rounding itself changes (the bf16 twin against the float32 twin, the
same weights), which a product on unrounded operands would far exceed; the book's DeepConvNet
through eight rounded layers and dropout is held to BF16_STEP_TOLERANCE (measured: the twin
with float64 sums instead of float32 ones moves its gradients as far from the float32-summed
twin as fastnn is, 3e-2 at batch 20)."""
import numpy as np
import pytest

from fastnn import io
from fastnn import nets as N
from fastnn import optim as O
from fastnn._kernels import _bf16, _blas
from fastnn._kernels._convnet import Plan
from fastnn.reference import conv as RC
from fastnn.reference import layers as RL
from fastnn.reference import nets as RN
from fastnn.registry import BF16_STEP_TOLERANCE

KERNELS = [k for k in _bf16.KERNELS if k == "scalar" or _bf16.have_avx2()]


def _oracle(convs, Wc, bc, Wd, bd, x, t, precision):
    """Loss, scores and gradients of the Plan's network by the twins' layers: the bf16 ones
    (precision='bf16') or the book's in float32 (None)."""
    conv, affine = (RC.Bf16Convolution, RL.Bf16Affine) if precision else (RC.Convolution,
                                                                            RL.Affine)
    layers = []
    for (C, H, W, F, FH, FW, stride, pad, pool), w, b in zip(convs, Wc, bc):
        layers += [conv(w, b, stride, pad), RL.Relu()]
        if pool:
            layers.append(RC.Pooling(2, 2, 2))
    for j, (w, b) in enumerate(zip(Wd, bd)):
        layers.append(affine(w, b))
        if j < len(Wd) - 1:
            layers.append(RL.Relu())
    y = x
    for layer in layers:
        y = layer.forward(y)
    last = RL.SoftmaxWithLoss()
    loss = last.forward(y, t)
    d = last.backward(1)
    for layer in reversed(layers):
        d = layer.backward(d)
    weighted = [layer for layer in layers if hasattr(layer, "dW")]
    return loss, y, [layer.dW for layer in weighted] + [layer.db for layer in weighted]


def _rel(a, ref):
    return float(np.abs(np.asarray(a, np.float64) - ref).max() / np.abs(ref).max())


GEOMETRIES = {  # (C, H, W, F, FH, FW, stride, pad, pool) per convolution; the image side
    "one pooled 3x3": ([(1, 8, 8, 16, 3, 3, 1, 1, 1)], 8),
    "3 channels, pad 0": ([(3, 8, 8, 16, 3, 3, 1, 0, 0)], 8),
    "two layers, pad 2": ([(1, 8, 8, 16, 3, 3, 1, 1, 1), (16, 4, 4, 32, 3, 3, 1, 2, 0)], 8),
    "2x2 then 3x3": ([(2, 9, 9, 16, 2, 2, 1, 1, 1), (16, 5, 5, 16, 3, 3, 1, 1, 0)], 9),
    "three layers": ([(1, 10, 10, 16, 3, 3, 1, 1, 0), (16, 10, 10, 16, 3, 3, 1, 1, 1),
                      (16, 5, 5, 32, 3, 3, 1, 1, 0)], 10),
}


def _geometry(name):
    convs, side = GEOMETRIES[name]
    last = convs[-1]
    out = last[1] + 2 * last[7] - last[4] + 1
    return convs, last[3] * (out // 2 if last[8] else out) ** 2, side


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_both_paths_are_the_twins_bf16_products(name):
    """Each path of the Plan (direct on one and two threads, im2col + GEMM) gives the bf16
    twin's scores, loss and gradients, far closer than the float32 twin is: a product on
    unrounded operands (the input, a filter, a column, dz, a dense input, weight or delta)
    would leave a sizeable part of the rounding's effect."""
    convs, features, side = _geometry(name)
    rng = np.random.default_rng(len(name))
    n = 3
    Wc = [(rng.standard_normal((F, C, FH, FW)) / np.sqrt(C * FH * FW)).astype(np.float32)
          for C, _, _, F, FH, FW, _, _, _ in convs]
    bc = [(0.1 * rng.standard_normal(cv[3])).astype(np.float32) for cv in convs]
    sizes = [features, 7, 4]
    Wd = [(rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
          for a, b in zip(sizes, sizes[1:])]
    bd = [(0.1 * rng.standard_normal(b)).astype(np.float32) for b in sizes[1:]]
    x = rng.random((n, convs[0][0], side, side), dtype=np.float32)
    t = rng.integers(0, 4, n)
    loss_ref, y_ref, grads_ref = _oracle(convs, Wc, bc, Wd, bd, x, t, "bf16")
    loss32, y32, grads32 = _oracle(convs, Wc, bc, Wd, bd, x, t, None)
    for direct, shares in ((True, 1), (True, 2), (False, 1)):
        what = f"{name}, direct={direct}, shares={shares}"
        plan = Plan(convs, sizes, [0.0, 0.0], n, np.float32, direct=direct, max_shares=2,
                    precision="bf16")
        assert plan.direct == direct and plan.precision == "bf16"
        out = np.empty((n, 4), np.float32)
        plan.forward(Wc, bc, Wd, bd, x, out, None, shares)
        grads = [np.empty_like(a) for a in Wc + Wd + bc + bd]
        L, D = len(Wc), len(Wd)
        loss = plan.gradient(Wc, bc, Wd, bd, x, t, True, grads[:L], grads[L + D:2 * L + D],
                             grads[L:L + D], grads[2 * L + D:], shares=shares)
        assert abs(loss - loss_ref) <= 1e-5 * abs(loss_ref), what
        # the gradients in the oracle's order: dW of every layer, then db
        grads = grads[:L + D] + grads[L + D:]
        for i, (got, ref, f32) in enumerate(zip([out] + grads, [y_ref] + grads_ref,
                                                 [y32] + grads32)):
            effect = _rel(f32, ref)
            assert effect > 1e-4, (what, i, effect)  # the rounding shows
            assert _rel(got, ref) <= 1e-3 * effect, (what, i, _rel(got, ref), effect)


NETWORKS = {  # name: (make(api, precision), batch, the direct path)
    "SimpleConvNet": (lambda api, p: api.SimpleConvNet(dtype=np.float32, precision=p), 100,
                      True),
    "SimpleConvNet[6x6 filters, stride 2]": (lambda api, p: api.SimpleConvNet(
        conv_param={'filter_num': 30, 'filter_size': 6, 'pad': 0, 'stride': 2},
        dtype=np.float32, precision=p), 100, False),
    "SimpleConvNet[16 filters, pad 1]": (lambda api, p: api.SimpleConvNet(
        conv_param={'filter_num': 16, 'filter_size': 3, 'pad': 1, 'stride': 1},
        dtype=np.float32, precision=p), 20, True),
    "DeepConvNet": (lambda api, p: api.DeepConvNet(dtype=np.float32, precision=p), 4, True),
}


def _mnist_like(rng, n):
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    x[rng.random(x.shape) < 0.8] = 0
    return x, rng.integers(0, 10, n)


def _build(name, api, precision="bf16"):
    np.random.seed(0)  # the book's weights come from np.random
    return NETWORKS[name][0](api, precision)


def _gradient(net, x, t):
    np.random.seed(1)  # DeepConvNet's dropout masks: the same on every side
    return {key: np.array(g) for key, g in net.gradient(x, t).items()}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_step_is_the_twins_bf16_step(name):
    """A training step of the book's networks (784-pixel images) against the bf16 twin; the
    shallow ones far closer to it than to the float32 twin (or within float32's own 1e-5,
    where the rounding moves an array less: the last bias), DeepConvNet (eight rounded layers
    and dropout) within BF16_STEP_TOLERANCE."""
    _, n, direct = NETWORKS[name]
    x, t = _mnist_like(np.random.default_rng(5), n)
    fast, twin, ref32 = _build(name, N), _build(name, RN), _build(name, RN, None)
    assert fast._plan(n).direct == direct
    grads, twin_grads, grads32 = (_gradient(net, x, t) for net in (fast, twin, ref32))
    np.random.seed(1)
    twin_loss = twin.loss(x, t)
    deep = name == "DeepConvNet"
    for key, ref in twin_grads.items():
        err, effect = _rel(grads[key], ref), _rel(grads32[key], ref)
        assert effect > (1e-3 if key.startswith("W") else 1e-6), (key, effect)  # it shows
        assert err <= (BF16_STEP_TOLERANCE if deep else 1e-3 * effect + 1e-5), (key, err,
                                                                              effect)
    assert abs(fast.last_loss - twin_loss) <= (BF16_STEP_TOLERANCE if deep else 1e-5) * twin_loss
    assert grads[next(iter(grads))].dtype == np.float32


@pytest.mark.parametrize("name", ["SimpleConvNet", "SimpleConvNet[6x6 filters, stride 2]",
                                  "DeepConvNet"])
def test_any_layout_and_dtype_computes_as_its_float32_copy(name):
    """Non-contiguous, Fortran-ordered and float64 images: a bf16 network computes in float32,
    exactly what it computes on the C-contiguous float32 copy."""
    x, t = _mnist_like(np.random.default_rng(6), 8)
    net = _build(name, N)
    ref_grads, ref_scores = _gradient(net, x, t), net.predict(x)
    wide = np.zeros((16, 1, 28, 28), np.float32)
    wide[::2] = x
    for images in (wide[::2], np.asfortranarray(x), x.astype(np.float64),
                   np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)):
        assert not images.flags.c_contiguous or images.dtype != np.float32
        grads = _gradient(net, images, t)
        for key, g in ref_grads.items():
            np.testing.assert_array_equal(grads[key], g, err_msg=key)
        np.testing.assert_array_equal(net.predict(images), ref_scores)
    assert net.accuracy(x.astype(np.float64), t, 4) == net.accuracy(x, t, 4)


def test_weights_stay_float32_and_are_rounded_per_call():
    """The step leaves the float32 weights as they were; an in-place update (an optimizer's)
    is seen by the next call, on both paths (the direct path packs the rounded filters of each
    call); predict between steps changes nothing."""
    x, t = _mnist_like(np.random.default_rng(7), 6)
    for name in ("SimpleConvNet", "SimpleConvNet[6x6 filters, stride 2]", "DeepConvNet"):
        net = _build(name, N)
        before = {k: a.copy() for k, a in net.params.items()}
        first = _gradient(net, x, t)
        for k, a in net.params.items():
            np.testing.assert_array_equal(a, before[k])
            assert a.dtype == np.float32
        net.predict(x[:3])
        again = _gradient(net, x, t)
        for k in first:
            np.testing.assert_array_equal(again[k], first[k])
        for a in net.params.values():
            a *= np.float32(1.25)
        fresh = _build(name, N)
        for k, a in net.params.items():
            fresh.params[k][...] = a
        np.testing.assert_array_equal(net.predict(x), fresh.predict(x))
        updated = _gradient(net, x, t)
        for k, g in _gradient(fresh, x, t).items():
            np.testing.assert_array_equal(updated[k], g)


def test_scalar_and_avx2_kernels_give_the_same_step():
    x, t = _mnist_like(np.random.default_rng(8), 4)
    for name in ("SimpleConvNet", "DeepConvNet"):
        results = []
        for kernel in KERNELS:
            previous = _bf16.set_kernel(kernel)
            try:
                results.append(_gradient(_build(name, N), x, t))
            finally:
                _bf16.set_kernel(previous)
        for other in results[1:]:
            for key, g in results[0].items():
                np.testing.assert_array_equal(other[key], g)


@pytest.mark.skipif(not _blas.HAVE_GEMM_BF16, reason="the native bfloat16 GEMM needs MKL as "
                    "the BLAS backend (pip install 'fastnn[mkl]', FASTNN_BLAS=mkl)")
def test_native_gemm_path_gives_the_portable_step():
    """MKL's bfloat16 GEMM (uint16 operands) for the GEMMs, the direct convolution on its
    float32 values either way: the same products, summed in another order."""
    x, t = _mnist_like(np.random.default_rng(9), 4)
    for name in ("SimpleConvNet", "DeepConvNet"):
        results = []
        for flag in (False, True):
            previous = _bf16.set_native(flag)
            try:
                results.append(_gradient(_build(name, N), x, t))
            finally:
                _bf16.set_native(previous)
        for key, g in results[0].items():
            assert _rel(results[1][key], g) <= BF16_STEP_TOLERANCE, key


def _separable(rng, n):
    """Images of a bright 4x4 square in one of ten places (the class) over faint noise."""
    t = rng.integers(0, 10, n)
    x = 0.1 * rng.random((n, 1, 28, 28), dtype=np.float32)
    for i, label in enumerate(t):
        r, c = 4 + 8 * (label // 5) + 2, 2 + 5 * (label % 5)
        x[i, 0, r:r + 4, c:c + 4] += 1.0
    return x, t


@pytest.mark.parametrize("name, steps", [("SimpleConvNet", 60),
                                         ("SimpleConvNet[6x6 filters, stride 2]", 60),
                                         ("DeepConvNet", 40)])
def test_a_short_training_run_learns(name, steps):
    """Adam on a separable problem: the bf16 network learns it as the float32 one does
    (measured: SimpleConvNet's test loss 2.30 -> below 1e-3 on both paths, DeepConvNet's, its
    dropout on as the book's loss has it, 2.31 -> 1.38 against 1.37 in float32; test accuracy
    1.0 each)."""
    rng = np.random.default_rng(10)
    x, t = _separable(rng, 400)
    x_test, t_test = _separable(rng, 200)
    results = {}
    for precision in (None, "bf16"):
        net = _build(name, N, precision)
        optimizer = O.Adam(lr=0.003)
        np.random.seed(2)
        first = None
        for step in range(steps):
            batch = np.random.choice(400, 20)
            optimizer.update(net.params, net.gradient(x[batch], t[batch]))
            first = net.last_loss if first is None else first
        results[precision] = (first, net.loss(x_test, t_test), net.accuracy(x_test, t_test, 20))
    first, last, accuracy = results["bf16"]
    assert last < 0.75 * first and accuracy > 0.9, results
    assert abs(accuracy - results[None][2]) <= 0.1, results


def test_snapshot_and_files_keep_the_precision(tmp_path):
    x, _ = _mnist_like(np.random.default_rng(11), 3)
    for name in ("SimpleConvNet", "DeepConvNet"):
        net = _build(name, N)
        copy = net.snapshot()
        assert copy.precision == "bf16"
        np.testing.assert_array_equal(copy.predict(x), net.predict(x))
        path = tmp_path / "net.npz"
        io.save_network(path, net)
        loaded = io.load_network(path)
        assert type(loaded) is type(net) and loaded.precision == "bf16", name
        np.testing.assert_array_equal(loaded.predict(x), net.predict(x))
        assert _build(name, N, None).config.get("precision") is None


@pytest.mark.parametrize("api", [N, RN], ids=["fastnn", "twin"])
def test_bad_precision(api):
    """The dense networks' checks and messages: bf16 needs float32 (a TypeError: the dtype is
    the wrong kind), anything but None and 'bf16' is a ValueError."""
    small = {"input_dim": (1, 8, 8), "conv_param": {'filter_num': 2, 'filter_size': 3,
                                                    'pad': 1, 'stride': 1}}
    for cls, options in ((api.SimpleConvNet, small), (api.DeepConvNet, {})):
        with pytest.raises(TypeError, match="precision='bf16' needs dtype=float32"):
            cls(**options, dtype=np.float64, precision="bf16")
        for bad in ("fp16", "BF16", 16, "float32"):
            with pytest.raises(ValueError, match="precision must be None"):
                cls(**options, dtype=np.float32, precision=bad)
        assert cls(**options, dtype=np.float64, precision=None).precision is None


def test_plan_refuses_bad_precision():
    convs = [(1, 8, 8, 16, 3, 3, 1, 1, 1)]
    with pytest.raises(TypeError, match="precision='bf16' needs dtype=float32"):
        Plan(convs, [256, 10], [0.0], 2, np.float64, precision="bf16")
    with pytest.raises(ValueError, match="precision must be None"):
        Plan(convs, [256, 10], [0.0], 2, np.float32, precision="bfloat16")
    assert Plan(convs, [256, 10], [0.0], 2, np.float32).precision is None


def test_bf16_refuses_what_it_cannot_compute():
    x, t = _mnist_like(np.random.default_rng(12), 2)
    net = _build("SimpleConvNet", N)
    with pytest.raises(ValueError, match="numerical_gradient: a precision='bf16'"):
        net.numerical_gradient(x, t)
    # weights replaced by arrays the compiled pass cannot take: refused, not run in float32
    for key, layer in (("W1", net.layers["Conv1"]), ("W2", net.layers["Affine1"])):
        layer.W = np.asfortranarray(net.params[key])
        for call in (lambda: net.predict(x), lambda: net.loss(x, t),
                     lambda: net.gradient(x, t), lambda: net.accuracy(x, t, 1)):
            with pytest.raises(TypeError, match=r"precision='bf16' computes with the layers' "
                                                r"own C-contiguous float32"):
                call()
        layer.W = net.params[key]
    net.predict(x)
    with pytest.raises(TypeError, match="complex"):
        net.predict(x + 1j)
