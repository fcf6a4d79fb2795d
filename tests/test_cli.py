"""The fastnn command as a user meets it: one-line errors before any work, exit statuses,
self-describing network files, notes, output.

Each test runs in its own folder (``fastnn train`` saves ``fastnn-weights.npz`` there by
default) with a private cache and no network.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import SHARED_DATASETS

import fastnn
from fastnn import datasets, io, threads
from fastnn.__main__ import EPOCH_LINES, main

MNIST = SHARED_DATASETS / "mnist"
needs_mnist = pytest.mark.skipif(not (MNIST / "t10k-labels-idx1-ubyte.gz").exists(),
                                 reason=f"MNIST not found in {MNIST}")
needs_sklearn = pytest.mark.skipif(
    __import__("importlib").util.find_spec("sklearn") is None,
    reason="the digits need scikit-learn (fastnn[digits])")
needs_matplotlib = pytest.mark.skipif(
    __import__("importlib").util.find_spec("matplotlib") is None,
    reason="figures need matplotlib (fastnn[plot])")
DEFAULT_SAVE = "fastnn-weights.npz"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTNN_DATA", raising=False)
    monkeypatch.delenv("FASTNN_DEBUG", raising=False)

    def no_network(url, timeout):
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(datasets, "_fetch", no_network)


def run(capsys, *argv):
    """(exit status, stdout, stderr) of ``fastnn argv``, in this process."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err, command, *fragments):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"fastnn {command}: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, err)


# --- bad arguments: exit status 2, one line, nothing done ----------------------------------------

TRAIN_BAD = [
    (["--lr", "nan"], "--lr"), (["--lr", "0"], "must be > 0"), (["--lr", "-0.1"], "> 0"),
    (["--lr", "inf"], "finite"), (["--batch-size", "0"], "--batch-size"),
    (["--hidden", "0"], "--hidden"), (["--hidden", "50", "-3"], "--hidden"),
    (["--iters", "0"], "--iters"), (["--iters", "-5"], "--iters"), (["--epochs", "-1"], "> 0"),
    (["--epochs", "nan"], "finite"), (["--threads", "0"], "--threads"),
    (["--optimizer", "adamw"], "unknown optimizer 'adamw'"),
    (["--weight-decay", "-1"], ">= 0"), (["--seed", "-1"], ">= 0"), (["--iters", "2.5"], "whole"),
    (["--activation", "tanh"], "invalid choice"), (["--dtype", "float16"], "invalid choice"),
    (["--compare-reference", "--optimizer", "adam"], "not be the same run"),
    (["--digits", "--data-dir", "."], "choose one"),
    (["--iters", "10", "--epochs", "1"], "choose one"),
    (["--save", "same.png", "--plot", "same.png"], "the same file"),
    (["--dropout", "1"], "[0, 1)"), (["--dropout", "-0.1"], "[0, 1)"),
    (["--dropout", "nan"], "finite"),
    (["--compare-reference", "--batchnorm"], "not be the same run"),
    (["--compare-reference", "--dropout", "0.2"], "not be the same run"),
    (["--precision", "bf16", "--dtype", "float64"], "drop --dtype float64"),
    (["--precision", "bf16", "--net", "deepconv", "--dtype", "float64"],
     "drop --dtype float64"),
    (["--precision", "bf16", "--compare-reference"], "not be the same run"),
    (["--precision", "fp16"], "invalid choice"),
]


@pytest.mark.parametrize("argv, fragment", TRAIN_BAD, ids=[" ".join(a) for a, _ in TRAIN_BAD])
def test_train_refuses_bad_values_before_any_work(capsys, tmp_path, argv, fragment):
    code, out, err = run(capsys, "train", *argv)
    assert code == 2
    assert_one_line_error(err, "train", fragment)
    assert out == ""  # nothing loaded, nothing trained
    assert not (tmp_path / DEFAULT_SAVE).exists()


def test_train_refuses_a_missing_data_folder_and_does_not_create_it(capsys, tmp_path):
    code, out, err = run(capsys, "train", "--data-dir", tmp_path / "mnsit")
    assert code == 2
    assert_one_line_error(err, "train", "--data-dir", "does not exist")
    assert not (tmp_path / "mnsit").exists() and out == ""


@pytest.mark.parametrize("option", ["--save", "--plot"])
def test_train_refuses_outputs_it_could_not_write(capsys, tmp_path, option):
    (tmp_path / "folder").mkdir()
    (tmp_path / DEFAULT_SAVE).write_bytes(b"earlier weights")
    for target, fragment in ((tmp_path / "missing" / "w.npz", "does not exist"),
                             (tmp_path / "folder", "is a folder")):
        code, out, err = run(capsys, "train", option, target)
        assert code == 2
        assert_one_line_error(err, "train", option, fragment)
        assert out == ""
    # the earlier file is untouched, no temporary is left
    assert (tmp_path / DEFAULT_SAVE).read_bytes() == b"earlier weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == [DEFAULT_SAVE, "folder"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="needs a user for whom permissions hold (not root)")
def test_train_refuses_a_folder_it_cannot_write(capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, _, err = run(capsys, "train", "--save", locked / "w.npz")
    assert code == 2
    assert_one_line_error(err, "train", "permission denied")


PREDICT_BAD = [(["missing.npz"], "does not exist"), (["."], "is a folder")]


@pytest.mark.parametrize("argv, fragment", PREDICT_BAD)
def test_predict_refuses_missing_weights(capsys, argv, fragment):
    code, out, err = run(capsys, "predict", *argv)
    assert code == 2
    assert_one_line_error(err, "predict", fragment)
    assert out == ""


def _junk_files(tmp_path):
    """name -> what its one-line error must say (None: only that it names the file)."""
    from fastnn.nets import TwoLayerNet

    network = TwoLayerNet(12, 5, 10, rng=0)
    io.save_network(tmp_path / "good.npz", network)
    data = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "junk.npz").write_bytes(b"this is not a weights file at all")
    (tmp_path / "truncated.npz").write_bytes(data[:len(data) // 2])
    (tmp_path / "empty.pkl").write_bytes(b"")
    io.save_params(tmp_path / "nonet.npz", {"a": np.zeros(3)})
    return {"junk.npz": None, "truncated.npz": None, "empty.pkl": None,
            "nonet.npz": "not the weights of a network", "good.npz": "a network of 12 inputs"}


def test_predict_reports_wrong_weights_files_in_one_line(capsys, tmp_path):
    for name, fragment in _junk_files(tmp_path).items():
        code, out, err = run(capsys, "predict", tmp_path / name, "--activation", "relu")
        assert code == 1, (name, err)
        lines = [line for line in err.strip().splitlines() if ": note: " not in line]
        assert len(lines) == 1 and lines[0].startswith("fastnn predict: error: "), (name, err)
        assert "Traceback" not in err and name in lines[0], (name, err)
        if fragment:
            assert fragment in lines[0], (name, err)
        assert "test accuracy" not in out


def test_predict_refuses_a_missing_data_folder(capsys, tmp_path):
    from fastnn.nets import TwoLayerNet

    io.save_network(tmp_path / "w.npz", TwoLayerNet(784, 5, 10, rng=0))
    code, _, err = run(capsys, "predict", tmp_path / "w.npz", "--data-dir", tmp_path / "nope")
    assert code == 2
    assert_one_line_error(err, "predict", "--data-dir", "does not exist")


def test_predict_without_mnist_fails_at_run_time(capsys, tmp_path):
    from fastnn.nets import TwoLayerNet

    io.save_network(tmp_path / "w.npz", TwoLayerNet(784, 5, 10, rng=0))
    (tmp_path / "empty").mkdir()
    code, out, err = run(capsys, "predict", tmp_path / "w.npz", "--data-dir", tmp_path / "empty",
                         "--no-download")
    assert code == 1
    assert_one_line_error(err, "predict", "MNIST")
    assert out == ""


BENCH_BAD = [(["--rounds", "0"], "--rounds"), (["--threads", "0"], "--threads"),
             (["--json", "missing/b.json"], "does not exist"), (["--json", "."], "is a folder"),
             (["--png", "missing/b.png"], "does not exist"),
             (["--backends", "--png", "b.png"], "separate runs")]


@pytest.mark.parametrize("argv, fragment", BENCH_BAD, ids=[" ".join(a) for a, _ in BENCH_BAD])
def test_bench_refuses_bad_arguments_before_measuring(capsys, argv, fragment):
    code, out, err = run(capsys, "bench", *argv)
    assert code == 2
    assert_one_line_error(err, "bench", fragment)
    assert out == ""


GRADCHECK_BAD = [(["--tol", "nan"], "finite"), (["--tol", "0"], "> 0"),
                 (["--batch", "0"], "--batch"), (["--hidden", "0"], "--hidden"),
                 (["--weight-decay", "-1"], ">= 0"), (["--data-dir", "nowhere"], "does not exist")]


@pytest.mark.parametrize("argv, fragment", GRADCHECK_BAD,
                         ids=[" ".join(a) for a, _ in GRADCHECK_BAD])
def test_gradcheck_refuses_bad_arguments(capsys, argv, fragment):
    code, out, err = run(capsys, "gradcheck", *argv)
    assert code == 2
    assert_one_line_error(err, "gradcheck", fragment)
    assert out == ""


PLOT_BAD = [(["spiral"], "invalid choice"), (["descent", "--lr", "0"], "> 0"),
            (["descent", "--init", "nan", "1"], "finite"),
            (["descent", "--out", "missing/d.png"], "does not exist"),
            (["softmax", "--weights", "missing.npz"], "does not exist"),
            (["descent", "--steps", "0"], "--steps")]


@pytest.mark.parametrize("argv, fragment", PLOT_BAD, ids=[" ".join(a) for a, _ in PLOT_BAD])
def test_plot_refuses_bad_arguments(capsys, argv, fragment):
    code, out, err = run(capsys, "plot", *argv)
    assert code == 2
    assert_one_line_error(err, "plot", fragment)
    assert out == ""


def test_the_command_itself(capsys):
    code, out, err = run(capsys, "--version")
    assert (code, out.strip()) == (0, f"fastnn {fastnn.__version__}")
    code, out, err = run(capsys)
    assert code == 2 and err.startswith("fastnn: error: ") and len(err.splitlines()) == 1
    code, out, err = run(capsys, "fly")
    assert code == 2 and "invalid choice" in err and len(err.splitlines()) == 1
    code, out, err = run(capsys, "train", "--help")
    assert code == 0 and "(default: 0.1" in out and "(default: 10000" in out


def test_a_traceback_only_when_asked(capsys, tmp_path, monkeypatch):
    (tmp_path / "junk.npz").write_bytes(b"junk")
    code, _, err = run(capsys, "predict", "junk.npz")
    assert code == 1 and "Traceback" not in err
    with pytest.raises(Exception):
        main(["--debug", "predict", "junk.npz"])
    with pytest.raises(Exception):
        main(["predict", "junk.npz", "--debug"])
    monkeypatch.setenv("FASTNN_DEBUG", "1")
    with pytest.raises(Exception):
        main(["predict", "junk.npz"])


def test_errors_on_a_real_console(tmp_path):
    """The installed command: exit statuses and stderr as a shell sees them."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("FASTNN_DEBUG", None)
    for argv, status in ((["train", "--lr", "nan"], 2), (["bench", "--rounds", "0"], 2)):
        done = subprocess.run([sys.executable, "-m", "fastnn", *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == status, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
        assert done.stdout == ""
    (tmp_path / "junk.npz").write_bytes(b"junk")
    done = subprocess.run([sys.executable, "-m", "fastnn", "predict", "junk.npz"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.startswith("fastnn predict: error: ")
    assert "Traceback" not in done.stderr
    done = subprocess.run([sys.executable, "-m", "fastnn", "predict", "junk.npz"], cwd=tmp_path,
                          env={**env, "FASTNN_DEBUG": "1"}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1 and "Traceback" in done.stderr


# --- network files: predict gives what train printed ----------------------------------------------

def train_accuracy(out):
    lines = [line for line in out.splitlines() if line.startswith("fastnn: test accuracy")]
    assert len(lines) == 1, out  # the result once
    return lines[0].split("fastnn: test accuracy ")[1].split(",")[0]


def predicted_accuracy(out, path):
    line, = [line for line in out.splitlines() if line.startswith(f"{path}: test accuracy")]
    return line.split("test accuracy ")[1].split()[0]


@needs_mnist
@pytest.mark.parametrize("save, extra", [
    ("w.pkl", []),  # fastnn's own pickle: once scored 0.0958 (read as sigmoid)
    ("s.npz", ["--activation", "sigmoid"]),  # a sigmoid .npz: once read as relu
    ("m.npz", ["--hidden", "20", "10", "--dtype", "float32", "--optimizer", "adam",
               "--lr", "0.01"]),
    # MultiLayerNetExtend: its running statistics are saved and scored as in training
    ("e.npz", ["--hidden", "20", "10", "--batchnorm", "--dropout", "0.1", "--dtype", "float32"]),
])
def test_predict_scores_a_trained_network_as_train_did(capsys, save, extra):
    code, out, err = run(capsys, "train", "--data-dir", MNIST, "--iters", "150", "--save", save,
                         "--quiet", *extra)
    assert code == 0, err
    accuracy = train_accuracy(out)
    assert float(accuracy) > 0.5
    code, out, err = run(capsys, "predict", save, "--data-dir", MNIST)
    assert code == 0, err
    assert predicted_accuracy(out, save) == accuracy
    assert err == ""  # no guess, no note


@needs_sklearn
def test_the_digits_fallback_stands_out_and_its_network_is_scored_on_the_digits(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    iters = 1500  # 100 epochs of the digits' 15 steps
    code, out, err = run(capsys, "train", "--data-dir", tmp_path / "empty", "--no-download",
                         "--iters", iters, "--save", "d.npz")
    assert code == 0, err
    assert "NOTE: no MNIST here" in err and "training on scikit-learn's 8x8 digits" in err
    assert out.startswith("digits: 1438 training and 359 test images")
    epoch_lines = [line for line in out.splitlines() if line.startswith("epoch")]
    assert 2 <= len(epoch_lines) <= EPOCH_LINES + 1, out
    assert epoch_lines[0].startswith("epoch    1/100") and epoch_lines[-1].startswith("epoch  100/100")
    accuracy = train_accuracy(out)
    code, out, err = run(capsys, "predict", "d.npz")  # no MNIST needed
    assert code == 0, err
    assert predicted_accuracy(out, "d.npz") == accuracy
    assert "trained on scikit-learn's 8x8 digits" in err


@needs_sklearn
@pytest.mark.parametrize("extra", [[], ["--batchnorm", "--hidden", "30", "20"]])
def test_train_precision_bf16(capsys, extra):
    """--precision bf16 trains a float32 network with bfloat16 GEMM operands, says so, and
    saves it with its precision: predict scores it as train did."""
    code, out, err = run(capsys, "train", "--digits", "--iters", "600", "--save", "b.npz",
                         "--quiet", "--precision", "bf16", *extra)
    assert code == 0, err
    assert "float32 (bf16 GEMM operands)" in out.splitlines()[0]
    accuracy = train_accuracy(out)
    assert float(accuracy) > 0.8
    network = io.load_network("b.npz")
    assert network.precision == "bf16" and network.dtype == np.float32
    code, out, err = run(capsys, "predict", "b.npz")
    assert code == 0 and predicted_accuracy(out, "b.npz") == accuracy


@needs_sklearn
def test_train_convnet_precision_bf16(capsys):
    """--net simpleconv --precision bf16: the book's SimpleConvNet (on the 8x8 digits) with
    its convolution's and dense layers' operands rounded learns as the float32 one does
    (measured: 0.730 against 0.727 after 600 steps), and is saved with its precision."""
    common = ["train", "--digits", "--net", "simpleconv", "--iters", "600", "--quiet"]
    code, out, err = run(capsys, *common, "--dtype", "float32", "--save", "f.npz")
    assert code == 0, err
    reference = float(train_accuracy(out))
    code, out, err = run(capsys, *common, "--save", "c.npz", "--precision", "bf16")
    assert code == 0, err
    assert "float32 (bf16 GEMM operands)" in out.splitlines()[0]
    accuracy = train_accuracy(out)
    assert float(accuracy) > 0.6 and abs(float(accuracy) - reference) < 0.05, (accuracy,
                                                                              reference)
    network = io.load_network("c.npz")
    assert type(network).__name__ == "SimpleConvNet"
    assert network.precision == "bf16" and network.dtype == np.float32
    code, out, err = run(capsys, "predict", "c.npz")
    assert code == 0 and predicted_accuracy(out, "c.npz") == accuracy


@needs_sklearn
def test_bare_weights_still_work_with_a_note(capsys, tmp_path):
    code, out, err = run(capsys, "train", "--digits", "--iters", "200", "--save", "d.npz",
                         "--quiet", "--activation", "sigmoid")
    accuracy = train_accuracy(out)
    network = io.load_network("d.npz")
    io.save_params("bare.npz", network.params)  # what fastnn train saved before
    code, out, err = run(capsys, "predict", "bare.npz")
    assert code == 0 and "weights alone" in err and "relu hidden layers" in err
    code, out, err = run(capsys, "predict", "bare.npz", "--activation", "sigmoid")
    assert code == 0 and predicted_accuracy(out, "bare.npz") == accuracy
    assert "weights alone" not in err


@needs_mnist
def test_the_books_sample_weights(capsys):
    weights = SHARED_DATASETS / "book" / "sample_weight.pkl"
    if not weights.exists():
        pytest.skip(f"{weights} not found")
    code, out, err = run(capsys, "predict", weights, "--data-dir", MNIST)
    assert code == 0 and predicted_accuracy(out, weights) == "0.9352"
    assert "sigmoid hidden layers" in err  # the guess, said
    code, out, err = run(capsys, "predict", weights, "--data-dir", MNIST, "--activation",
                         "sigmoid")
    assert predicted_accuracy(out, weights) == "0.9352" and err == ""


# --- threads and output -----------------------------------------------------------------------------

@needs_sklearn
def test_threads_are_clamped_with_a_note_and_restored(capsys):
    cpus = threads.available_cpus()
    before = threads.get_num_threads()
    code, out, err = run(capsys, "train", "--digits", "--iters", "20", "--save", "",
                         "--quiet", "--threads", cpus + 62)
    assert code == 0
    assert f"fastnn train: note: {cpus + 62} threads requested" in err and f"using {cpus}" in err
    assert threads.get_num_threads() == before


@needs_sklearn
def test_compare_reference_says_the_thread_count_of_both_runs(capsys):
    code, out, err = run(capsys, "train", "--digits", "--iters", "30", "--save", "", "--quiet",
                         "--compare-reference")
    assert code == 0, err
    assert "1 BLAS thread(s), as the book's run" in out
    assert "fastnn is" in out and "(both on 1 BLAS thread(s))" in out


@needs_sklearn
def test_epoch_lines_are_limited_whatever_the_epoch_size(capsys):
    code, out, _ = run(capsys, "train", "--digits", "--iters", "3000", "--batch-size", "10",
                       "--save", "")
    epochs = [line for line in out.splitlines() if line.startswith("epoch")]
    assert code == 0 and 2 <= len(epochs) <= EPOCH_LINES + 1
    assert out.count("test accuracy") == 1
    code, out, _ = run(capsys, "train", "--digits", "--iters", "100", "--save", "", "--quiet")
    assert not [line for line in out.splitlines() if line.startswith("epoch")]


def test_bench_threads_are_clamped_to_the_cpus(capsys):
    cpus = threads.available_cpus()
    code, out, err = run(capsys, "bench", "--quick", "--rounds", "1", "--threads", cpus + 62)
    assert code == 0 and f"using {cpus}" in err
    blas_lines = [line for line in out.splitlines() if line.startswith("BLAS: openblas")]
    assert blas_lines and all(f"threads {cpus} " in line for line in blas_lines)


def test_bench_writes_its_table_and_json(capsys, tmp_path):
    code, out, err = run(capsys, "bench", "--quick", "--rounds", "1", "--json", "b.json")
    assert code == 0, err
    assert "| TwoLayerNet step" in out and "threads chosen per call" in out
    record = json.loads((tmp_path / "b.json").read_text())
    assert {r["op"] for r in record["results"]} >= {"TwoLayerNet step", "Affine fwd+bwd"}
    # the bf16 step beside the float32 one, and which bf16 kernel ran, on which CPU
    assert any(r["dtype"] == "bf16" and r["op"] == "TwoLayerNet step" for r in record["results"])
    assert any(r["dtype"] == "bf16" and r["op"] == "SimpleConvNet step (Adam)"
               for r in record["results"])
    from fastnn._kernels import _bf16

    bf16_line, = [line for line in out.splitlines() if line.startswith("bf16: ")]
    assert f"({_bf16.kernel()} kernel)" in bf16_line and "avx512_bf16" in bf16_line
    assert err == ""  # stderr is no terminal here: no progress line


def test_bench_backends_side_by_side(capsys, tmp_path):
    from fastnn._kernels._blas import available_backends

    backends = available_backends()
    code, out, err = run(capsys, "bench", "--backends", "--quick", "--rounds", "2",
                         "--json", "b.json")
    assert code == 0, err
    head = out.splitlines()
    for name in backends:  # each backend's route in the header, and its column
        assert any(line.startswith(f"fastnn: GEMMs through {name} = ") for line in head), out
    table_head = next(line for line in head if line.startswith("| operation"))
    assert [c.strip() for c in table_head.strip("|").split("|")][3:3 + len(backends)] == backends
    assert "mkl" not in backends or any(line.startswith("MKL: threading layer") for line in head)
    record = json.loads((tmp_path / "b.json").read_text())
    assert list(record) == backends
    for name in backends:
        assert record[name]["environment"]["fastnn_backend"] == name
        assert len(record[name]["samples"]) == 2
        ops = {c[0] for c in record[name]["cases"]}
        assert {"TwoLayerNet step", "SimpleConvNet step (Adam)"} <= ops
        assert all(t > 0 for t in record[name]["seconds"])


def test_bench_progress_on_a_terminal():
    import io as std_io

    from fastnn.benchmark import Case, _Progress

    class Terminal(std_io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    progress = _Progress(stream)
    cases = [Case("op", f"shape {i}", "float32", None, None) for i in range(3)]
    for i, case in enumerate(cases):
        progress(i, len(cases), case)
    progress.close()
    text = stream.getvalue()
    assert "[1/3] op, shape 0, float32 (2 left)" in text and "[3/3] op, shape 2" in text
    assert text.endswith("\r")
    silent = std_io.StringIO()
    _Progress(silent)(0, 1, cases[0])
    assert silent.getvalue() == ""


# --- gradcheck (the book's gradient_check.py) --------------------------------------------------------

@needs_mnist
def test_gradcheck_on_mnist(capsys):
    code, out, err = run(capsys, "gradcheck", "--data-dir", MNIST, "--no-download", "--seed", "0")
    assert code == 0, err
    assert "TwoLayerNet(784, 50, 10)" in out and "3 MNIST training images" in out
    lines = {line.split(":")[0]: line for line in out.splitlines() if ":" in line}
    # the book prints W1:4.2e-10 b1:2.5e-09 W2:5.0e-09 b2:1.4e-07 (its 1e-7 in the log)
    for key in ("W1", "b1", "W2", "b2"):
        mean_abs = float(lines[key].split(":")[1].split()[0])
        assert mean_abs < 1e-6, lines[key]


def test_gradcheck_falls_back_to_random_inputs_and_fails_over_tol(capsys, tmp_path):
    args = ["gradcheck", "--data-dir", tmp_path, "--no-download", "--seed", "1", "--hidden", "7",
            "5", "--activation", "sigmoid", "--weight-decay", "0.1", "--exact", "--batch", "2"]
    code, out, err = run(capsys, *args)
    assert code == 0
    assert err.startswith("fastnn gradcheck: note: MNIST not loaded") and "random inputs" in out
    assert "MultiLayerNet(784, [7, 5], 10, 'sigmoid')" in out and "W3:" in out
    code, out, err = run(capsys, *args, "--tol", "1e-300")
    assert code == 1
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "differ by more than --tol 1e-300" in errors[0]
    assert "W3:" in out  # the table is printed before the verdict


def test_gradient_does_not_import_the_networks():
    done = subprocess.run([sys.executable, "-c",
                           "import sys, fastnn.gradient; print('fastnn.nets' in sys.modules)"],
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


# --- plot ---------------------------------------------------------------------------------------------

@needs_matplotlib
def test_plot_writes_each_figure(capsys, tmp_path):
    for figure in ("activations", "descent"):
        code, out, err = run(capsys, "plot", figure)
        assert code == 0, err
        assert (tmp_path / f"fastnn-{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, _ = run(capsys, "plot", "descent", "--lr", "0.1", "--steps", "20", "--out", "d.png")
    assert "20 steps to (-0.0346, 0.0461)" in out  # the book's gradient_method.py ends there


@needs_matplotlib
@needs_mnist
def test_plot_softmax_of_mnist_scores(capsys, tmp_path):
    code, out, err = run(capsys, "plot", "softmax", "--data-dir", MNIST, "--iters", "100",
                         "--batch", "4", "--out", "s.png")
    assert code == 0, err
    assert "P(y) per class for 4 MNIST test images" in out
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


@needs_matplotlib
@needs_sklearn
def test_plot_softmax_of_a_saved_digits_network(capsys, tmp_path):
    run(capsys, "train", "--digits", "--iters", "300", "--save", "d.pkl", "--quiet")
    code, out, err = run(capsys, "plot", "softmax", "--weights", "d.pkl", "--batch", "5",
                         "--out", "s.png")
    assert code == 0, err
    assert "P(y) per class for 5 digits test images (d.pkl)" in out
    assert "trained on scikit-learn's 8x8 digits" in err
    code, _, err = run(capsys, "plot", "softmax", "--batch", "51")
    assert code == 2 and "at most 50" in err


@needs_mnist
@needs_matplotlib
def test_train_plot_writes_the_curves(capsys, tmp_path):
    code, out, err = run(capsys, "train", "--data-dir", MNIST, "--iters", "1200", "--save", "",
                         "--plot", "curves.png", "--quiet", "--dtype", "float32")
    assert code == 0, err
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
