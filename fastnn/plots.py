"""Figures: training curves, and the lecture notes' figures drawn by fastnn's own functions.

``fastnn train --plot`` writes :func:`training_curves`; ``fastnn plot FIGURE`` writes
:func:`activations`, :func:`softmax_table` and :func:`descent` (the book's chapter-3 and
chapter-4 figures).  Each function writes one PNG, atomically (:func:`fastnn.io.atomic_open`).

matplotlib is imported when a figure is drawn, never with fastnn (``pip install
'fastnn[plot]'``), and through its object API (``Figure`` + the Agg canvas), so drawing a
figure leaves pyplot's backend and open figures alone.  Each returns its ``Figure``.
"""
import numpy as np

__all__ = ["training_curves", "activations", "softmax_table", "descent"]


def _figure(width, height):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("figures need matplotlib: pip install 'fastnn[plot]'") from exc
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    from fastnn.io import atomic_open

    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)


def _accuracy_limits(values):
    """y-limits around ``values`` with a margin, within [0, 1]."""
    values = np.asarray(values, dtype=np.float64)
    lo, hi = float(values.min()), float(values.max())
    pad = max(0.1 * (hi - lo), 0.005)
    return max(0.0, lo - pad), min(1.0, hi + pad)


def training_curves(path, loss, train_acc, test_acc, iter_per_epoch=None, title=None,
                    final_test_acc=None):
    """The loss per step (raw, and smoothed as the book's ``smooth_curve``) and the accuracies
    per epoch, side by side.

    Parameters
    ----------
    path : str or os.PathLike
        The PNG to write.
    loss : sequence of float
        The minibatch loss of each step (``Trainer.train_loss_list``).
    train_acc, test_acc : sequence of float
        One per evaluation (``Trainer.train_acc_list``, ``test_acc_list``); the first is taken
        after the first step, before the network has learnt much.
    iter_per_epoch : int, optional
        Steps per epoch: the accuracy axis is then in epochs trained.
    title : str, optional
    final_test_acc : float, optional
        The test accuracy after the last step (``Trainer.train()``'s result), marked where the
        run ended (needs ``iter_per_epoch``).
    """
    from fastnn.util import smooth_curve

    loss = np.asarray(loss, dtype=np.float64)
    fig = _figure(11, 4.2)
    ax_loss, ax_acc = fig.subplots(1, 2)
    steps = np.arange(loss.size)
    ax_loss.plot(steps, loss, lw=0.5, color="tab:blue", alpha=0.3, label="minibatch loss")
    if loss.size >= 11:  # smooth_curve's window: shorter runs come back shorter
        ax_loss.plot(steps, smooth_curve(loss), lw=1.8, color="tab:blue",
                     label="smoothed (the book's smooth_curve)")
    if loss.size and np.all(loss > 0):
        ax_loss.set_yscale("log")
    ax_loss.set(xlabel="iteration", ylabel="loss", title="training loss")
    ax_loss.legend(loc="upper right")

    train_acc, test_acc = list(train_acc), list(test_acc)
    x = np.arange(len(train_acc), dtype=np.float64)
    xlabel = "evaluation"
    if iter_per_epoch:
        xlabel = "epochs trained"
    dense = len(train_acc) > 40  # markers only where they can be told apart
    ax_acc.plot(x, train_acc, "-" if dense else "o-", ms=3, label="train")
    ax_acc.plot(x, test_acc, "--" if dense else "s--", ms=3, label="test")
    if len(train_acc) > 2:
        # the first evaluations (about 0.1 on MNIST, taken after one step) would flatten the
        # range where the curves differ: scale to the last nine tenths, the first one excepted
        start = max(1, len(train_acc) // 10)
        lo, hi = _accuracy_limits(train_acc[start:] + test_acc[start:] +
                                  ([final_test_acc] if final_test_acc is not None else []))
        ax_acc.set_ylim(lo, hi)
        below = [i for i in range(start) if min(train_acc[i], test_acc[i]) < lo]
        if below:
            ax_acc.annotate(f"below the axis: the first {len(below)} evaluation(s), from "
                            f"test {test_acc[0]:.3f} after one step", xy=(0.02, 0.97),
                            xycoords="axes fraction", va="top", fontsize=8, color="gray")
    ax_acc.set(xlabel=xlabel, ylabel="accuracy", title="accuracy")
    ax_acc.xaxis.get_major_locator().set_params(integer=True)
    if final_test_acc is not None and iter_per_epoch:
        ax_acc.plot([loss.size / iter_per_epoch], [final_test_acc], "*", ms=10, color="tab:red",
                    label=f"test, after the last step: {final_test_acc:.4f}")
    elif len(test_acc):
        ax_acc.axhline(test_acc[-1], color="gray", lw=0.6, ls=":")
        ax_acc.text(x[-1], test_acc[-1], f"last test evaluation {test_acc[-1]:.4f} ",
                    va="bottom", ha="right", fontsize=8, color="gray")
    ax_acc.legend(loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path)
    return fig


def activations(path, x_range=(-5.0, 5.0)):
    """The book's activation functions (step, sigmoid, ReLU, identity), computed by
    :mod:`fastnn.functions`, and their gradients (``sigmoid_grad``, ``relu_grad``; the step's is
    0 away from 0, the identity's 1)."""
    from fastnn import functions as F

    x = np.linspace(*x_range, 1001)
    fig = _figure(11, 4.2)
    ax_f, ax_g = fig.subplots(1, 2, sharex=True)
    curves = [("step", F.step_function(x), np.zeros_like(x), "tab:gray", ":"),
              ("sigmoid", F.sigmoid(x), F.sigmoid_grad(x), "tab:blue", "-"),
              ("ReLU", F.relu(x), F.relu_grad(x), "tab:red", "-"),
              ("identity", F.identity_function(x), np.ones_like(x), "tab:green", "--")]
    for name, y, dy, color, style in curves:
        ax_f.plot(x, y, style, color=color, label=name)
        ax_g.plot(x, dy, style, color=color, label=f"{name}'")
    ax_f.set(xlabel="x", ylabel="h(x)", title="activation functions", ylim=(-0.6, 1.6))
    ax_g.set(xlabel="x", ylabel="h'(x)", title="their gradients (what backward multiplies by)",
             ylim=(-0.15, 1.15))
    for ax in (ax_f, ax_g):
        ax.axhline(0, color="black", lw=0.5)
        ax.axvline(0, color="black", lw=0.5)
        ax.legend(loc="upper left")
    _save(fig, path)
    return fig


def softmax_table(path, probabilities, labels, images=None, title=None):
    """The softmax distribution of a batch as a table: one row per sample, P(y = k) per class
    k, the argmax framed (green when it is the label, red when not), the image beside it.

    Parameters
    ----------
    probabilities : array_like, (n, k)
        Rows of ``fastnn.functions.softmax(scores)``.
    labels : array_like, (n,)
        The true classes.
    images : array_like, (n, h, w), optional
        Drawn at the start of each row.
    """
    from matplotlib.patches import Rectangle

    p = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    n, k = p.shape
    fig = _figure(1.0 + 0.75 * (k + 1), 0.9 + 0.5 * n)
    ax = fig.subplots()
    ax.imshow(p, cmap="Blues", vmin=0, vmax=1, extent=(-0.5, k - 0.5, n - 0.5, -0.5),
              aspect="auto")
    predicted = p.argmax(axis=1)
    for i in range(n):
        for j in range(k):
            ax.text(j, i, f"{p[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if p[i, j] > 0.6 else "black")
        right = predicted[i] == labels[i]
        ax.add_patch(Rectangle((predicted[i] - 0.5, i - 0.5), 1, 1, fill=False, lw=2,
                               edgecolor="tab:green" if right else "tab:red"))
        if images is not None:
            ax.imshow(np.asarray(images[i]), cmap="gray_r", aspect="auto",
                      extent=(-1.45, -0.55, i + 0.45, i - 0.45))
    ax.set_xlim(-1.5 if images is not None else -0.5, k - 0.5)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xticks(range(k), [f"P({j})" for j in range(k)], fontsize=8)
    ax.set_yticks(range(n), [f"label {labels[i]}, argmax {predicted[i]}" for i in range(n)],
                  fontsize=8)
    for tick, i in zip(ax.get_yticklabels(), range(n)):
        tick.set_color("black" if predicted[i] == labels[i] else "tab:red")
    ax.xaxis.tick_top()
    ax.set_title(title or "softmax: P(y) per class", fontsize=10)
    _save(fig, path)
    return fig


def descent(path, lr=0.1, init=(-3.0, 4.0), steps=20, lim=4.5):
    """The book's chapter-4 figures in one: the contour of f(x0, x1) = x0^2 + x1^2, its
    negative gradient field (``fastnn.gradient.numerical_gradient_2d``) and the path of
    ``fastnn.gradient.gradient_descent(f, init, lr, steps)``; returns the figure and the path,
    (steps + 1, 2)."""
    from fastnn.gradient import gradient_descent, numerical_gradient_2d

    def f(x):
        return np.sum(x ** 2, axis=-1)

    fig = _figure(6.4, 6)
    ax = fig.subplots()
    grid = np.linspace(-lim, lim, 201)
    X0, X1 = np.meshgrid(grid, grid)
    levels = ax.contour(X0, X1, X0 ** 2 + X1 ** 2, levels=[0.5, 2, 4.5, 8, 12.5, 18, 24.5],
                        colors="tab:gray", linewidths=0.7)
    ax.clabel(levels, fontsize=7, fmt="%g")
    arrows = np.linspace(-lim + 0.5, lim - 0.5, 15)
    A0, A1 = np.meshgrid(arrows, arrows)
    points = np.column_stack([A0.ravel(), A1.ravel()])
    grad = numerical_gradient_2d(f, points)
    ax.quiver(points[:, 0], points[:, 1], -grad[:, 0], -grad[:, 1], angles="xy",
              color="tab:blue", alpha=0.5, width=0.003)
    _, path_points = gradient_descent(f, np.asarray(init, dtype=np.float64), lr=lr,
                                      step_num=steps, return_path=True)
    ax.plot(path_points[:, 0], path_points[:, 1], "o-", color="tab:red", ms=4, lw=1,
            label=f"gradient descent, lr {lr:g}, {steps} steps")
    ax.plot(*path_points[0], "s", color="black", ms=6, label=f"start {tuple(init)}")
    ax.set(xlabel="x0", ylabel="x1", xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal",
           title="f(x0, x1) = x0² + x1²: contours, -gradient, descent")
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)
    return fig, path_points
