"""fastnn.plots: each figure is drawn from fastnn's own numbers and written as a PNG."""
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastnn import functions as F
from fastnn import plots
from fastnn.gradient import gradient_descent
from fastnn.util import smooth_curve

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.image import imread  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def read_png(path):
    assert path.read_bytes()[:8] == PNG
    return imread(path)


def test_training_curves_smooth_the_loss_and_scale_the_accuracy_axis(tmp_path):
    rng = np.random.default_rng(0)
    loss = 2.3 * np.exp(-np.arange(600) / 100) + 0.1 + 0.05 * rng.random(600)
    train = [0.16] + list(np.linspace(0.90, 0.98, 16))
    test = [0.15] + list(np.linspace(0.905, 0.97, 16))
    fig = plots.training_curves(tmp_path / "c.png", loss, train, test, iter_per_epoch=36,
                                final_test_acc=0.985)
    image = read_png(tmp_path / "c.png")
    assert image.shape[:2] == (420, 1100)
    ax_loss, ax_acc = fig.axes
    raw, smooth = ax_loss.lines[:2]
    np.testing.assert_array_equal(raw.get_ydata(), loss)
    np.testing.assert_allclose(smooth.get_ydata(), smooth_curve(loss))
    lo, hi = ax_acc.get_ylim()
    # the range is where the curves differ, not from the untrained 0.16
    assert 0.85 < lo < 0.90 and hi <= 1.0
    assert any("below the axis" in text.get_text() for text in ax_acc.texts)
    final, = [line for line in ax_acc.lines if "after the last step" in line.get_label()]
    assert (final.get_xdata()[0], final.get_ydata()[0]) == (600 / 36, 0.985)
    assert hi > 0.985  # the final point is on the axis too


@settings(max_examples=6, deadline=None)
@given(steps=st.integers(0, 30), evaluations=st.integers(0, 5))
def test_training_curves_draw_runs_of_any_length(tmp_path_factory, steps, evaluations):
    path = tmp_path_factory.mktemp("curves") / "c.png"
    rng = np.random.default_rng(steps)
    plots.training_curves(path, rng.random(steps) + 0.01, rng.random(evaluations),
                          rng.random(evaluations))
    assert path.read_bytes()[:8] == PNG


def test_activations_are_fastnns_own_values(tmp_path):
    fig = plots.activations(tmp_path / "a.png")
    read_png(tmp_path / "a.png")
    ax_f, ax_g = fig.axes
    by_label = {line.get_label(): line for ax in (ax_f, ax_g) for line in ax.lines}
    x = by_label["sigmoid"].get_xdata()
    np.testing.assert_array_equal(by_label["sigmoid"].get_ydata(), F.sigmoid(x))
    np.testing.assert_array_equal(by_label["sigmoid'"].get_ydata(), F.sigmoid_grad(x))
    np.testing.assert_array_equal(by_label["ReLU"].get_ydata(), F.relu(x))
    np.testing.assert_array_equal(by_label["ReLU'"].get_ydata(), F.relu_grad(x))
    np.testing.assert_array_equal(by_label["step"].get_ydata(), F.step_function(x))


def test_softmax_table_frames_the_argmax(tmp_path):
    scores = np.random.default_rng(1).standard_normal((4, 10)) * 3
    p = F.softmax(scores)
    labels = p.argmax(axis=1)
    labels[0] = (labels[0] + 1) % 10  # one wrong row
    fig = plots.softmax_table(tmp_path / "s.png", p, labels,
                              images=np.random.default_rng(2).random((4, 28, 28)))
    read_png(tmp_path / "s.png")
    ax, = fig.axes
    cells = [t.get_text() for t in ax.texts]
    assert len(cells) == 40 and cells[:10] == [f"{v:.2f}" for v in p[0]]
    frames = ax.patches
    assert [int(round(f.get_x() + 0.5)) for f in frames] == list(p.argmax(axis=1))
    colors = [tuple(np.round(f.get_edgecolor()[:3], 2)) for f in frames]
    assert colors[0] != colors[1] == colors[2] == colors[3]  # wrong framed red, right green
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks[0] == f"label {labels[0]}, argmax {p[0].argmax()}"


def test_descent_draws_fastnns_gradient_descent(tmp_path):
    fig, path = plots.descent(tmp_path / "d.png", lr=0.1, init=(-3.0, 4.0), steps=20)
    read_png(tmp_path / "d.png")

    def f(x):
        return np.sum(x ** 2, axis=-1)

    _, expected = gradient_descent(f, np.array([-3.0, 4.0]), lr=0.1, step_num=20,
                                   return_path=True)
    np.testing.assert_array_equal(path, expected)
    ax, = fig.axes
    drawn = [line for line in ax.lines if line.get_label().startswith("gradient descent")][0]
    np.testing.assert_array_equal(drawn.get_xdata(), expected[:, 0])
    # a learning rate too large diverges, and the figure shows it as it is
    _, wild = plots.descent(tmp_path / "w.png", lr=1.05, steps=5)
    assert np.abs(wild[-1]).max() > np.abs(wild[0]).max()


def test_figures_leave_pyplot_alone(tmp_path):
    # no pyplot, so no backend chosen or switched (matplotlib.get_backend() would import it)
    code = ("import sys, matplotlib, fastnn.plots as p; "
            "before = matplotlib.rcParams._get_backend_or_none(); "
            f"p.activations({str(tmp_path / 'a.png')!r}); "
            "print('matplotlib.pyplot' in sys.modules, "
            "matplotlib.rcParams._get_backend_or_none() == before)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.split() == ["False", "True"], done.stderr


def test_fastnn_imports_no_matplotlib():
    done = subprocess.run([sys.executable, "-c", "import sys, fastnn.plots, fastnn.__main__; "
                           "print('matplotlib' in sys.modules)"], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip() == "False", done.stderr
