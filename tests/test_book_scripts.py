"""``python -m fastnn book``: the book's scripts, unchanged, on fastnn (issue 12).

Every script runs in a fresh process from a copy of the book's snapshot in a temporary folder
(never in ../shared/), with MPLBACKEND=Agg, one BLAS thread and a private cache; long scripts
are cut as benchmarks/book_scripts.py cuts them, or shorter.  Where a script draws random
numbers, the book's own run (``--numpy``, nothing mapped) from the same seed is the oracle.
"""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import BOOK_CODE, SHARED_DATASETS, book_module

import fastnn.book.runner as runner
from fastnn.book import _exports

MNIST = SHARED_DATASETS / "mnist"
_spec = importlib.util.spec_from_file_location(
    "book_scripts", Path(__file__).resolve().parents[1] / "benchmarks" / "book_scripts.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

needs_book = pytest.mark.skipif(not (BOOK_CODE / "common" / "layers.py").is_file(),
                                reason=f"the book's code is not at {BOOK_CODE}")
needs_mnist = pytest.mark.skipif(not all((MNIST / f).is_file() for f in bench.MNIST_FILES),
                                 reason=f"MNIST not found in {MNIST}")
pytestmark = needs_book


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """A writable copy of the snapshot, MNIST in its dataset/, and the runs' environment."""
    tmp = tmp_path_factory.mktemp("book")
    mnist = MNIST if MNIST.is_dir() else None
    if mnist is None:
        copy = tmp / "book-code"
        import shutil

        shutil.copytree(BOOK_CODE, copy)
        return copy, bench.environment(tmp / "cache")
    copy = bench.prepare_copy(BOOK_CODE, mnist, tmp)
    env = bench.environment(tmp / "cache")
    bench.warm_caches(copy, env)  # the book's loader prints while it makes its mnist.pkl
    return copy, env


def cut(book, script, *edits):
    """A copy of ``script`` named ``_cut_<name>`` beside it, with ``edits`` applied."""
    copy, _ = book
    path = copy / script
    text = path.read_text(encoding="utf-8")
    for old, new in edits:
        assert old in text, f"{script} no longer holds {old!r}"
        text = text.replace(old, new)
    target = path.with_name("_cut_" + path.name)
    target.write_text(text, encoding="utf-8")
    return target.relative_to(copy).as_posix()


def run(book, script, *flags, args=(), cwd=None, seed=0):
    copy, env = book
    path = copy / script
    cmd = [sys.executable, "-m", "fastnn", "book", *flags]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    done = subprocess.run(cmd + [path.name, *args], cwd=cwd or path.parent, env=env,
                          capture_output=True, text=True, timeout=600)
    return done


_BOOK_RUNS = {}


def books(book, script):
    """The stdout of the book's own run of ``script`` (``--numpy``, seed 0), run once."""
    if script not in _BOOK_RUNS:
        _BOOK_RUNS[script] = ok(run(book, script, "--numpy"))
    return _BOOK_RUNS[script]


def ok(done):
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def numbers(text):
    return [float(x) for x in bench.NUMBER.findall(text)]


def same_figures(ours, books, rel=1e-9):
    assert bench.NUMBER.sub("#", ours) == bench.NUMBER.sub("#", books), (ours, books)
    np.testing.assert_allclose(numbers(ours), numbers(books), rtol=rel, atol=0)


def fastnn_has(module, name):
    mod = importlib.import_module(runner.BOOK_MODULES.get(module)
                                  or runner.NET_MODULES[module])
    return name in mod.__all__


# --- the runner's contract -------------------------------------------------------------------

PROBE = """import os, sys
print(repr(sys.argv))
print(__file__)
print(sys.path[0])
print(os.getcwd())
print(__name__)
"""


def test_runs_a_script_as_python_would(book):
    copy, env = book
    probe = copy / "ch05" / "_probe.py"
    probe.write_text(PROBE)
    for cwd, script in ((probe.parent, probe.name), (copy, "ch05/_probe.py")):
        plain = subprocess.run([sys.executable, script, "a", "--b"], cwd=cwd, env=env,
                               capture_output=True, text=True, check=True)
        ours = subprocess.run([sys.executable, "-m", "fastnn", "book", script, "a", "--b"],
                              cwd=cwd, env=env, capture_output=True, text=True, check=True)
        assert ours.stdout == plain.stdout
        assert ours.stderr.count("\n") == 1 and ours.stderr.startswith(
            "fastnn book: common.{functions,layers,gradient,optimizer,trainer,util,"
            "multi_layer_net,multi_layer_net_extend} and dataset.mnist answered by fastnn")


def test_exit_status_and_errors_are_the_scripts(book):
    copy, _ = book
    (copy / "ch05" / "_exit.py").write_text("import sys\nsys.exit(3)\n")
    assert run(book, "ch05/_exit.py").returncode == 3
    (copy / "ch05" / "_raise.py").write_text("def f():\n    raise KeyError('k')\nf()\n")
    done = run(book, "ch05/_raise.py")
    assert done.returncode == 1
    assert "_raise.py\", line 3" in done.stderr and "KeyError: 'k'" in done.stderr
    assert "runpy" not in done.stderr  # the traceback starts at the script
    assert run(book, "ch05/_no_such_script.py").returncode == 2


def test_a_module_fastnn_does_not_answer_is_named(book):
    copy, _ = book
    (copy / "ch05" / "_unmapped.py").write_text(
        "import sys, os\nsys.path.append(os.pardir)\nimport common.np\n")
    done = run(book, "ch05/_unmapped.py")
    assert done.returncode == 1
    assert "fastnn book: common.np is not one of the book's modules that fastnn answers" in done.stderr


def test_a_name_fastnn_lacks_is_named_with_its_module(book):
    """Through a star import (NameError), a from-import (ImportError) and an attribute."""
    copy, env = book
    scripts = {"_star.py": "from common.layers import *\nDeconvolution(1)\n",
               "_from.py": "from common.layers import Deconvolution\n"}
    bootstrap = ("import sys\nimport fastnn.book.common.layers\n"
                 "from fastnn.book import _exports\n"
                 "_exports._MISSING['common.layers']['Deconvolution'] = ('fastnn.layers',)\n"
                 "from fastnn.book.runner import main\nsys.exit(main(sys.argv[1:]))\n")
    for name, body in scripts.items():
        (copy / "ch05" / name).write_text("import sys, os\nsys.path.append(os.pardir)\n" + body)
        done = subprocess.run([sys.executable, "-c", bootstrap, name], cwd=copy / "ch05",
                              env=env, capture_output=True, text=True)
        assert done.returncode == 1
        assert done.stderr.strip().splitlines()[-1] == (
            "fastnn book: Deconvolution of the book's common.layers is not in this fastnn "
            "(looked for fastnn.layers.Deconvolution); run the book's own module for it, or a "
            "fastnn that has it"), done.stderr
    namespace = {"__name__": "fake"}
    exported, getattr_ = _exports.export(namespace, "common.fake",
                                         {"Affine": "fastnn.layers", "Nope": ("fastnn.layers",
                                                                              "fastnn.no_such")})
    assert exported == ["Affine"] and "Nope" not in namespace
    with pytest.raises(_exports.MissingName, match=r"Nope of the book's common.fake .*"
                                                   r"fastnn.layers.Nope or fastnn.no_such.Nope"):
        getattr_("Nope")
    assert not hasattr(type("M", (), {"__getattr__": staticmethod(getattr_)})(), "Nope")


BOOK_MODULES = [name for name in runner.BOOK_MODULES if "." in name]


@pytest.mark.parametrize("name", BOOK_MODULES)
def test_star_exports_are_the_books(name):
    """``from common.X import *`` hands a script the book's names (np, the functions,
    im2col...): fastnn's module exports each of them that fastnn has and no other; the ones it
    lacks are named by the module's error."""
    book = book_module(name)
    books = {n for n in vars(book) if not n.startswith("_")}
    ours = importlib.import_module(runner.BOOK_MODULES[name])
    lacking = {n for (module, n) in _exports.missing_names() if module == name}
    assert set(ours.__all__) | lacking == books
    assert not set(ours.__all__) & lacking
    for n in ours.__all__:
        assert getattr(ours, n) is not None
    assert ours.np is np


def test_the_modules_leave_with_the_run(tmp_path, capsys):
    """In-process runs (run_script) take the book's names out of sys.modules again."""
    script = tmp_path / "uses.py"
    script.write_text("import common.layers, dataset.mnist\nprint(common.layers.Affine)\n")
    before = set(sys.modules)
    assert runner.run_script(script, ["x"]) == 0
    assert capsys.readouterr().out == "<class 'fastnn.layers.Affine'>\n"
    assert not {n for n in set(sys.modules) - before if n.partition(".")[0] in ("common",
                                                                                "dataset")}


def test_data_dir_option(book, tmp_path):
    copy, _ = book
    (copy / "ch05" / "_where.py").write_text(
        "import sys, os\nsys.path.append(os.pardir)\nimport dataset.mnist as m\n"
        "print(m.dataset_dir)\nprint(m.img_size, m.train_num, sorted(m.key_file))\n")
    out = ok(run(book, "ch05/_where.py", "--data-dir", str(tmp_path)))
    assert out.splitlines() == [str(tmp_path), "784 60000 ['test_img', 'test_label', "
                                                "'train_img', 'train_label']"]
    if MNIST.is_dir():  # the copy's dataset/ holds the files: the book's folder is used
        assert ok(run(book, "ch05/_where.py")).splitlines()[0] == str(copy / "dataset")


# --- the book's scripts ----------------------------------------------------------------------


@needs_mnist
@pytest.mark.parametrize("script", ["ch03/neuralnet_mnist_batch.py", "ch03/neuralnet_mnist.py"])
def test_ch03_sample_weights_give_the_books_accuracy(book, script):
    assert ok(run(book, script, seed=None)) == "Accuracy:0.9352\n"


@needs_mnist
def test_ch03_the_plots_and_the_image(book):
    for script in ("ch03/step_function.py", "ch03/sigmoid.py", "ch03/relu.py",
                   "ch03/sig_step_compare.py"):
        ok(run(book, script))


@pytest.fixture(scope="module")
def books_gradient_check(book):
    return numbers(books(book, "ch05/gradient_check.py"))


@needs_mnist
@pytest.mark.parametrize("flags", [[], ["--nets"]], ids=["layers", "nets"])
def test_ch05_gradient_check_differences_are_as_small_as_the_books(book, books_gradient_check,
                                                                   flags):
    out = ok(run(book, "ch05/gradient_check.py", *flags))
    assert [line.split(":")[0] for line in out.splitlines()] == ["W1", "b1", "W2", "b2"]
    ours = numbers(out)
    assert len(ours) == 4
    for diff, books in zip(ours, books_gradient_check):
        assert 0 <= diff <= max(10 * books, 1e-12), (ours, books_gradient_check)


def test_ch04_gradient_simplenet_equals_the_books(book):
    same_figures(ok(run(book, "ch04/gradient_simplenet.py")),
                 books(book, "ch04/gradient_simplenet.py"))


@needs_mnist
@pytest.mark.parametrize("chapter, flags", [("ch04", ["--nets"]), ("ch05", []),
                                            ("ch05", ["--nets"])],
                         ids=["ch04-nets", "ch05-layers", "ch05-nets"])
def test_train_neuralnet_two_epochs_equal_the_books(book, chapter, flags):
    """The first 601 of the 10,000 steps: two evaluations, from one seed."""
    script = cut(book, f"{chapter}/train_neuralnet.py",
                 ("iters_num = 10000", "iters_num = 601"))
    out = ok(run(book, script, *flags))
    assert len(out.splitlines()) == 2
    same_figures(out, books(book, script))


@needs_mnist
def test_ch06_optimizer_compare_mnist_equals_the_books(book):
    """The star import of common.optimizer hands the script np; four optimizers, 101 steps."""
    script = cut(book, "ch06/optimizer_compare_mnist.py",
                 ("max_iterations = 2000", "max_iterations = 101"))
    out = ok(run(book, script))
    assert out.count("===========iteration:") == 2
    # Adam's last line computes in the parameters' dtype in fastnn's kernel
    same_figures(out, books(book, script), rel=1e-6)


def test_ch06_optimizer_compare_naive_runs_on_python_floats(book):
    done = run(book, "ch06/optimizer_compare_naive.py")
    ok(done)
    assert "Traceback" not in done.stderr


@needs_mnist
def test_ch06_hyperparameter_optimization_is_reproduced(book):
    """The Trainer draws its batches from np.random as the book's: the same seed gives the
    book's trials, accuracies and ranking."""
    script = cut(book, "ch06/hyperparameter_optimization.py",
                 ("optimization_trial = 100", "optimization_trial = 3"),
                 ("def __train(lr, weight_decay, epocs=50):",
                  "def __train(lr, weight_decay, epocs=10):"))
    out = ok(run(book, script))
    assert sum(line.startswith("val acc:") for line in out.splitlines()) == 3
    assert "=========== Hyper-Parameter Optimization Result" in out
    same_figures(out, books(book, script))


@needs_mnist
@pytest.mark.parametrize("script", ["ch06/weight_init_activation_histogram.py",
                                    "ch05/buy_apple.py", "ch05/buy_apple_orange.py",
                                    "ch04/gradient_1d.py", "ch04/gradient_2d.py",
                                    "ch04/gradient_method.py"])
def test_scripts_that_need_no_mapping_print_the_books(book, script):
    same_figures(ok(run(book, script)), books(book, script))


@needs_mnist
def test_ch06_weight_init_compare_equals_the_books(book):
    script = cut(book, "ch06/weight_init_compare.py",
                 ("max_iterations = 2000", "max_iterations = 101"))
    same_figures(ok(run(book, script)), books(book, script))


@needs_mnist
def test_ch06_overfit_weight_decay_equals_the_books(book):
    script = cut(book, "ch06/overfit_weight_decay.py", ("max_epochs = 201", "max_epochs = 6"))
    same_figures(ok(run(book, script)), books(book, script))


@needs_mnist
def test_ch06_dropout_trainer_lines_equal_the_books(book):
    if not fastnn_has("common.multi_layer_net_extend", "MultiLayerNetExtend"):
        pytest.skip("fastnn has no MultiLayerNetExtend yet")
    script = cut(book, "ch06/overfit_dropout.py", ("epochs=301,", "epochs=3,"))
    out = ok(run(book, script))
    assert out.count("train loss:") == 9 and out.count("=== epoch:") == 3
    same_figures(out, books(book, script), rel=1e-6)


@needs_mnist
def test_ch06_batch_norm_gradient_check_is_as_small_as_the_books(book):
    if not fastnn_has("common.multi_layer_net_extend", "MultiLayerNetExtend"):
        pytest.skip("fastnn has no MultiLayerNetExtend yet")
    script = "ch06/batch_norm_gradient_check.py"
    ours, theirs = ok(run(book, script)), books(book, script)
    assert bench.compare(ours, theirs, gradient_check=True) == "as small", (ours, theirs)
    assert len(ours.splitlines()) == 10  # W1..W3, b1..b3, gamma1, beta1, gamma2, beta2


@needs_mnist
def test_ch06_batch_norm_test_equals_the_books(book):
    """Two networks trained side by side, the batch-normalised one through fastnn's layers."""
    if not fastnn_has("common.multi_layer_net_extend", "MultiLayerNetExtend"):
        pytest.skip("fastnn has no MultiLayerNetExtend yet")
    script = cut(book, "ch06/batch_norm_test.py", ("max_epochs = 20", "max_epochs = 3"),
                 ("weight_scale_list = np.logspace(0, -4, num=16)",
                  "weight_scale_list = np.logspace(0, -4, num=16)[:2]"))
    out = ok(run(book, script))
    assert out.count("epoch:") == 6
    same_figures(out, books(book, script), rel=1e-6)


@needs_mnist
def test_ch07_train_convnet_on_the_books_subset(book):
    if not fastnn_has("common.layers", "Convolution"):
        pytest.skip("fastnn has no Convolution yet")
    edits = bench.CUTS["ch07/train_convnet.py"][1] + [
        ("(x_train, t_train), (x_test, t_test) = load_mnist(flatten=False)\n",
         "(x_train, t_train), (x_test, t_test) = load_mnist(flatten=False)\n"
         "x_train, t_train = x_train[:300], t_train[:300]\n")]
    script = cut(book, "ch07/train_convnet.py", *edits)
    for flags in ([], ["--nets"]):
        if flags and not fastnn_has("simple_convnet", "SimpleConvNet"):
            continue
        out = ok(run(book, script, *flags))
        assert out.count("train loss:") == 3 and "Saved Network Parameters!" in out


@pytest.mark.parametrize("flags", [[], ["--nets"]], ids=["layers", "nets"])
def test_ch07_apply_filter_with_the_books_scalar_bias(book, flags):
    """apply_filter.py builds Convolution(W, b=0) for each learned filter (issue 12); it
    reads params.pkl and lena_gray.png from the snapshot, no MNIST."""
    ok(run(book, "ch07/apply_filter.py", *flags))


@needs_mnist
@pytest.mark.parametrize("flags", [[], ["--nets"]], ids=["layers", "nets"])
def test_ch08_misclassified_mnist_gives_the_books_accuracy(book, flags):
    """The book's trained DeepConvNet over the whole test set."""
    if not fastnn_has("common.layers", "Convolution"):
        pytest.skip("fastnn has no Convolution yet")
    if flags and not fastnn_has("deep_convnet", "DeepConvNet"):
        pytest.skip("fastnn has no DeepConvNet yet")
    out = ok(run(book, "ch08/misclassified_mnist.py", *flags))
    assert "test accuracy:0.9797" in out


# --- the table's assembly from per-script lines ---------------------------------------------


def _row(script, numpy_s, fastnn_s, nets_s=None, error=None, figures="identical"):
    row = {"script": script, "cut": "", "loadavg": [1.0, 2.0], "started": "2026-12-01 14:00:00",
           "numpy": {"ok": True, "seconds": numpy_s, "stdout": "", "error": None}}
    row["fastnn"] = ({"ok": False, "seconds": fastnn_s, "stdout": "", "error": error}
                     if error else {"ok": True, "seconds": fastnn_s, "stdout": "",
                                    "error": None, "figures": figures})
    if nets_s is not None:
        row["nets"] = {"ok": True, "seconds": nets_s, "stdout": "", "error": None,
                       "figures": "rel <= 1e-15"}
    return row


def test_the_table_merges_rounds_into_medians_and_ratios_of_each_round(tmp_path):
    """Rounds of one script: the median time per mode with its range, and the median of the
    per-round ratios (each round's NumPy run against the same round's fastnn run)."""
    rows = [_row("ch05/a.py", 10.0, 8.0, 5.0), _row("ch05/a.py", 30.0, 20.0, 12.0),
            _row("ch05/a.py", 20.0, 10.0, 8.0, figures="rel <= 1e-12"),
            _row("ch07/b.py", 4.0, 1.0, error="ValueError: b must have shape (1,)")]
    lines = tmp_path / "runs.jsonl"
    lines.write_text("".join(bench.json.dumps({"header": "H", **r}) + "\n" for r in rows))
    loaded, headers = bench.load_lines(lines)
    assert headers == ["H"] * 4 and loaded == rows
    table = bench.markdown(loaded).splitlines()
    a, b = table[2].split(" | "), table[3].split(" | ")
    assert a[3] == "rel <= 1e-12"  # the worst round's figures
    assert a[4] == "20.00 (10.00-30.00, 3 runs)" and a[5] == "10.00 (8.00-20.00, 3 runs)"
    assert a[6] == "1.50x (1.25-2.00)"  # ratios 1.25, 1.5, 2.0
    assert a[8] == "2.50x (2.00-2.50)"  # 10/5, 30/12, 20/8
    assert b[2] == "no: ValueError: b must have shape (1,)" and b[5] == "fails"
    out = tmp_path / "table.md"
    bench.main(["--assemble", "--jsonl", str(lines), "--markdown", str(out)])
    text = out.read_text()
    assert text.startswith("H\n4 runs") and "| ch07/b.py |" in text


# --- chapter 4's network as a class ----------------------------------------------------------


@pytest.mark.parametrize("labels", [False, True], ids=["one-hot", "labels"])
def test_ch04_two_layer_net_is_the_books(labels):
    from fastnn.book.nets.ch04_two_layer_net import TwoLayerNet

    book = book_module("ch04.two_layer_net")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 5)).astype(np.float32)
    t = np.eye(3)[rng.integers(0, 3, 6)]
    np.random.seed(3)
    theirs = book.TwoLayerNet(5, 4, 3, weight_init_std=0.5)
    np.random.seed(3)
    ours = TwoLayerNet(5, 4, 3, weight_init_std=0.5)
    for key in theirs.params:
        np.testing.assert_array_equal(ours.params[key], theirs.params[key])
    y = ours.predict(x)
    np.testing.assert_allclose(y, theirs.predict(x), rtol=1e-12)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-12)
    ours_t = t.argmax(axis=1) if labels else t
    assert ours.loss(x, ours_t) == pytest.approx(theirs.loss(x, t), rel=1e-12)
    assert ours.accuracy(x, ours_t) == theirs.accuracy(x, t)
    grads, book_grads = ours.gradient(x, ours_t), theirs.gradient(x, t)
    numeric, book_numeric = ours.numerical_gradient(x, ours_t), theirs.numerical_gradient(x, t)
    for key in theirs.params:
        np.testing.assert_allclose(grads[key], book_grads[key], rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(numeric[key], book_numeric[key], rtol=1e-6, atol=1e-10)
    # the book's update, in place, is seen by the network
    before = ours.loss(x, ours_t)
    for key in ("W1", "b1", "W2", "b2"):
        ours.params[key] -= 0.5 * grads[key].copy()
    assert ours.loss(x, ours_t) < before
