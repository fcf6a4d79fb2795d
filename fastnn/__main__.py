"""The fastnn command: train on MNIST, score saved networks, benchmark, check gradients, plot.

  fastnn train      the book's TwoLayerNet on MNIST (the project's main job)
  fastnn predict W  the test accuracy of a saved network
  fastnn bench      side-by-side speed table against the NumPy twins
  fastnn gradcheck  backprop against numerical gradients, per parameter
  fastnn plot FIG   the lecture notes' figures, drawn by fastnn's own functions
  fastnn search     the book's hyperparameter search, on a Dask cluster or locally
  fastnn book S     a script of the book, unchanged, on fastnn (fastnn/book/runner.py)
"""
# Design: each command is two functions, ``_<name>_arguments(parser)``, which declares its
# arguments (with argparse types that refuse bad values: counts >= 1, finite rates > 0, output
# files whose folder exists, named folders that exist), and ``_<name>(args)``, which checks what
# the types cannot (combinations, optional packages) before any long work and then runs; one
# line of COMMANDS adds the command.  Failures are one line on stderr, "fastnn <command>:
# error: ...": exit status 2 for arguments (UsageError, argparse's own), 1 for failures at run
# time (any other exception); a traceback only with --debug or FASTNN_DEBUG=1.  Warnings
# (a thread count clamped, a weights file that needs a guess) become one-line notes.
import argparse
import math
import os
import sys
import time
import warnings

import fastnn

ACTIVATIONS = ("relu", "sigmoid", "identity")
EPOCH_LINES = 20  # about this many epoch lines per run, whatever the epoch size


class UsageError(Exception):
    """Arguments that cannot give a run: one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with errors on one line ("fastnn train: error: ..."), not usage + error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every default in the help texts (not "None" or a flag's False); descriptions as
    written."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (any(action.default is nothing for nothing in (None, False, argparse.SUPPRESS))
                or "%(default)" in text
                or isinstance(action, argparse._SubParsersAction)):
            return text
        return (text + " " if text else "") + "(default: %(default)s)"


# --- argument types: each refuses a bad value with a message that says what would do -----------

def count(text):
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def seed(text):
    """An integer >= 0 (NumPy's seeds)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _real(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


def rate(text):
    """A finite number > 0 (learning rates, tolerances, epochs)."""
    value = _real(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def nonnegative(text):
    """A finite number >= 0 (weight decay)."""
    value = _real(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def dropout_ratio(text):
    """A finite number in [0, 1) (the share of units Dropout drops)."""
    value = _real(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def output_file(text):
    """A file that can be written: its folder exists and is writable, and it is no folder.
    '' means "do not write"."""
    if text == "":
        return text
    folder = os.path.dirname(text) or "."
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a file name")
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (os.path.exists(text)
                                                    and not os.access(text, os.W_OK)):
        raise argparse.ArgumentTypeError(f"cannot write {text!r} (permission denied)")
    return text


def input_file(text):
    """A file that exists."""
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not a file")
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"{text!r} does not exist")
    return text


def folder(text):
    """A folder that exists (a mistyped --data-dir must not quietly mean 'no data')."""
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"folder {text!r} does not exist" if not
                                         os.path.exists(text) else f"{text!r} is not a folder")
    return text


def optimizer_name(text):
    """One of fastnn.optim.OPTIMIZERS, any case."""
    from fastnn.optim import OPTIMIZERS

    if text.lower() not in OPTIMIZERS:
        raise argparse.ArgumentTypeError(
            f"unknown optimizer {text!r}; choose from {', '.join(sorted(OPTIMIZERS))}")
    return text


# --- what several commands share ------------------------------------------------------------------

THREADS_HELP = ("most BLAS threads any computation may use; fastnn chooses per call by the work, "
                "one thread for the book's small GEMMs (see fastnn.threads)")


def _add_threads(p, default=None, extra=""):
    p.add_argument("--threads", type=count, default=default, metavar="N",
                   help=THREADS_HELP + extra + (
                       "; default: the BLAS setting, at most the CPUs this process may use"
                       if default is None else ""))


def _add_data(p):
    p.add_argument("--data-dir", type=folder, default=None, metavar="DIR",
                   help="folder of the four MNIST IDX files (default: $FASTNN_DATA, else "
                        "~/.cache/fastnn/mnist)")
    p.add_argument("--no-download", action="store_true",
                   help="never download MNIST (use the files found, or fall back)")


def _set_threads(n):
    """``--threads n``: the ceiling of fastnn's choice; what it became (a clamp says so)."""
    from fastnn import threads

    if n is not None:
        threads.set_num_threads(n)
    return threads.get_num_threads()


def _note(args, message):
    print(f"fastnn {args.command}: note: {message}", file=sys.stderr, flush=True)


def _needs_matplotlib(option):
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError(f"{option} needs matplotlib: pip install 'fastnn[plot]'")


def _load_mnist(args, one_hot_label=False):
    from fastnn.datasets import load_mnist

    return load_mnist(normalize=True, flatten=True, one_hot_label=one_hot_label,
                      data_dir=args.data_dir, download=not args.no_download)


def _load_data(args):
    """("MNIST", data), or, when MNIST can be neither found nor downloaded, ("digits", data)
    with a note that stands out."""
    from fastnn.datasets import DatasetNotFoundError, load_digits

    if getattr(args, "digits", False):
        return "digits", load_digits(normalize=True, flatten=True)
    try:
        return "MNIST", _load_mnist(args)
    except DatasetNotFoundError as exc:
        reason = _mnist_not_found(exc)
        try:
            data = load_digits(normalize=True, flatten=True)
        except ImportError:
            raise RuntimeError(f"{reason}; and the offline stand-in, scikit-learn's digits, "
                               "needs scikit-learn: pip install 'fastnn[digits]'") from None
        bar = "=" * 78
        print(f"{bar}\nNOTE: no MNIST here ({reason})\nNOTE: training on scikit-learn's 8x8 "
              f"digits instead ({len(data[0][0])} training, {len(data[1][0])} test images); "
              f"accuracies are the digits', not MNIST's.\nNOTE: --data-dir or FASTNN_DATA "
              f"names an MNIST folder.\n{bar}", file=sys.stderr, flush=True)
        return "digits", data


# --- train ----------------------------------------------------------------------------------------

# --net: the book's dense networks (ch. 5-6) or its convnets (ch. 7-8), whose defaults are the
# book's ch07/train_convnet.py and ch08/train_deepnet.py: Adam, lr 0.001, batch 100, 20 epochs
NETS = ("mlp", "simpleconv", "deepconv")
_CONVNET_DEFAULTS = {"optimizer": "Adam", "lr": 0.001, "epochs": 20}


def _train_arguments(p):
    p.add_argument("--net", choices=NETS, default="mlp",
                   help="mlp: TwoLayerNet/MultiLayerNet; simpleconv: the book's SimpleConvNet "
                        "(ch. 7); deepconv: its DeepConvNet (ch. 8); the convnets default to "
                        "the book's Adam, lr 0.001, 20 epochs")
    p.add_argument("--hidden", type=count, nargs="+", default=None, metavar="UNITS",
                   help="hidden layer sizes (default 50); one relu layer is the book's "
                        "TwoLayerNet; for a convnet, the size of its hidden affine layer "
                        "(default the book's: 100 simpleconv, 50 deepconv)")
    p.add_argument("--activation", choices=ACTIVATIONS, default="relu",
                   help="activation of the hidden layers")
    p.add_argument("--optimizer", type=optimizer_name, default=None,
                   help="SGD, Momentum, Nesterov, AdaGrad, RMSprop or Adam (any case); "
                        "default SGD, Adam for the convnets")
    p.add_argument("--lr", type=rate, default=None,
                   help="learning rate (default: 0.1; 0.001 for the convnets)")
    p.add_argument("--batch-size", type=count, default=100, help="images per step")
    p.add_argument("--iters", type=count, default=None,
                   help="steps (default: 10000, the book's; the convnets: 20 epochs)")
    p.add_argument("--epochs", type=rate, default=None, help="epochs instead of --iters")
    p.add_argument("--weight-decay", type=nonnegative, default=0.0, metavar="LAMBDA",
                   help="adds 0.5 * LAMBDA * sum(W**2) to the loss")
    p.add_argument("--batchnorm", action="store_true",
                   help="batch normalization after every hidden Affine layer (the book's "
                        "MultiLayerNetExtend)")
    p.add_argument("--dropout", type=dropout_ratio, default=None, metavar="RATIO",
                   help="dropout of this share of every hidden layer's units in training "
                        "(MultiLayerNetExtend)")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None,
                   help="of the network (default float64 as the book; float32 with "
                        "--precision bf16)")
    p.add_argument("--precision", choices=["bf16"], default=None,
                   help="bf16: the operands of every GEMM and convolution rounded to "
                        "bfloat16, products summed in float32; weights, gradients and "
                        "activations stay float32 (float32 networks)")
    p.add_argument("--seed", type=seed, default=0, help="of the weights and the batches")
    _add_data(p)
    p.add_argument("--digits", action="store_true",
                   help="train on scikit-learn's 8x8 digits (what happens, with a note, when "
                        "MNIST can be neither found nor downloaded)")
    p.add_argument("--save", type=output_file, default="fastnn-weights.npz", metavar="PATH",
                   help="where to save the network (.npz, or .pkl: the book's pickle), with "
                        "its architecture; '' to skip")
    p.add_argument("--plot", type=output_file, default=None, metavar="PNG",
                   help="write the training curves to this PNG")
    p.add_argument("--compare-reference", action="store_true",
                   help="then run the book's train_neuralnet.py (NumPy twins, float64, SGD) "
                        "for as many iterations, on as many BLAS threads, and compare")
    _add_threads(p, extra="; training runs one BLAS thread in each of its two threads "
                          "(training, evaluation) unless --compare-reference says more")
    p.add_argument("--quiet", action="store_true", help="no epoch lines or progress bar")


def _command_trainer(total_epochs, quiet):
    """The Trainer, printing about EPOCH_LINES epoch lines and, on a terminal, a progress bar.

    Until the Trainer has a public per-epoch callback, this hooks its ``_accuracies(network,
    epoch, iteration, loss) -> (train_acc, test_acc)``, which both the evaluation thread and
    the in-place path call, in epoch order.
    """
    from fastnn.trainer import Trainer

    stride = max(1, math.ceil(total_epochs / EPOCH_LINES))

    class CommandTrainer(Trainer):
        bar = None

        def train_step(self):
            super().train_step()
            if self.bar is not None:
                self.bar.update()

        def _accuracies(self, network, epoch, iteration, loss):
            accuracies = super()._accuracies(network, epoch, iteration, loss)
            if not quiet and (epoch == 1 or epoch == total_epochs or (epoch - 1) % stride == 0):
                line = (f"epoch {epoch:4d}/{total_epochs}  iter {iteration:6d}  loss "
                        f"{float(loss):.4f}  train acc {accuracies[0]:.4f}  test acc "
                        f"{accuracies[1]:.4f}")
                if self.bar is not None:
                    self.bar.write(line)
                else:
                    print(line, flush=True)
            return accuracies

    return CommandTrainer


def _progress_bar(total, quiet):
    """tqdm on a terminal (if installed), else None: plain lines only."""
    if quiet or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="it", leave=False, dynamic_ncols=True)


def _make_network(args, input_size, output_size, dtype):
    precision = args.precision
    from fastnn.nets import (DeepConvNet, MultiLayerNet, MultiLayerNetExtend,
                             SimpleConvNet, TwoLayerNet)

    if args.net != "mlp":
        import numpy as np

        np.random.seed(args.seed)  # the book's convnets draw their weights from np.random
        side = math.isqrt(input_size)
        if args.net == "simpleconv":
            return SimpleConvNet(input_dim=(1, side, side), hidden_size=args.hidden[0],
                                 output_size=output_size, dtype=dtype, precision=precision)
        if side != 28:
            raise UsageError(f"--net deepconv is the book's network for 28x28 images; these "
                             f"are {side}x{side}")
        return DeepConvNet(hidden_size=args.hidden[0], output_size=output_size, dtype=dtype,
                           precision=precision)

    if args.batchnorm or args.dropout is not None:
        return MultiLayerNetExtend(input_size, args.hidden, output_size,
                                   activation=args.activation, weight_init_std=args.activation,
                                   weight_decay_lambda=args.weight_decay,
                                   use_dropout=args.dropout is not None,
                                   dropout_ration=args.dropout or 0.5,
                                   use_batchnorm=args.batchnorm, dtype=dtype, rng=args.seed,
                                   precision=precision)
    if len(args.hidden) == 1 and args.activation == "relu" and not args.weight_decay:
        return TwoLayerNet(input_size, args.hidden[0], output_size, weight_init_std=0.01,
                           dtype=dtype, rng=args.seed, precision=precision)
    return MultiLayerNet(input_size, args.hidden, output_size, activation=args.activation,
                         weight_init_std=args.activation, weight_decay_lambda=args.weight_decay,
                         dtype=dtype, rng=args.seed, precision=precision)


def _trainer_options(trainer_class, n_threads):
    """Keyword arguments for the Trainer: train on ``n_threads`` BLAS threads (None: its
    default, one) and record the loss that ``gradient()`` computed (no second forward pass per
    step).  A Trainer without these parameters trains on one thread and records that loss
    anyway."""
    import inspect

    parameters = inspect.signature(trainer_class).parameters
    options = {"record_loss": "before"} if "record_loss" in parameters else {}
    if n_threads is None:
        return options
    if "blas_threads" in parameters:
        options["blas_threads"] = n_threads
    elif n_threads != 1:
        raise UsageError(f"--threads {n_threads} with --compare-reference: this Trainer trains "
                         "on one BLAS thread, so both runs would not be on the same count; use "
                         "--threads 1")
    return options


def _train_defaults(args):
    """Fill in the defaults that depend on --net (the book's settings for each network)."""
    conv = args.net != "mlp"
    if conv and (args.activation != "relu" or args.weight_decay or args.batchnorm
                 or args.dropout is not None or (args.hidden and len(args.hidden) > 1)):
        raise UsageError(f"--net {args.net} is the book's network: relu, no weight decay, "
                         "batch normalization or extra dropout, one hidden affine layer "
                         "(--hidden takes one size)")
    if args.precision is not None:
        if args.dtype == "float64":
            raise UsageError(f"--precision {args.precision} trains a float32 network (only "
                             "the GEMM operands are rounded); drop --dtype float64")
        if args.compare_reference:
            raise UsageError("--compare-reference runs the book's float64 train_neuralnet.py; "
                             f"with --precision {args.precision} it would not be the same run")
        args.dtype = "float32"
    if args.dtype is None:
        args.dtype = "float64"
    if args.hidden is None:
        args.hidden = [{"mlp": 50, "simpleconv": 100, "deepconv": 50}[args.net]]
    if args.optimizer is None:
        args.optimizer = _CONVNET_DEFAULTS["optimizer"] if conv else "SGD"
    if args.lr is None:
        args.lr = _CONVNET_DEFAULTS["lr"] if conv else 0.1
    if conv and args.iters is None and args.epochs is None:
        args.epochs = _CONVNET_DEFAULTS["epochs"]


def _train(args):
    import numpy as np

    _train_defaults(args)
    if args.compare_reference and args.net != "mlp":
        raise UsageError("--compare-reference runs the book's train_neuralnet.py, a dense "
                         f"network; with --net {args.net} it would not be the same run")

    if args.compare_reference and (args.optimizer.lower() != "sgd" or args.activation != "relu"
                                   or len(args.hidden) != 1 or args.weight_decay
                                   or args.batchnorm or args.dropout is not None):
        raise UsageError("--compare-reference runs the book's train_neuralnet.py, a "
                         "one-hidden-layer relu network trained by SGD without weight decay; "
                         "with these options it would not be the same run")
    if args.plot:
        _needs_matplotlib("--plot")
    if args.save and args.plot and os.path.abspath(args.save) == os.path.abspath(args.plot):
        raise UsageError("--save and --plot name the same file")
    if args.digits and args.data_dir:
        raise UsageError("--digits and --data-dir: choose one data set")
    if args.iters is not None and args.epochs is not None:
        raise UsageError("--iters and --epochs: choose one")
    _set_threads(args.threads)
    compare_threads = (args.threads or 1) if args.compare_reference else None
    from fastnn.trainer import Trainer

    trainer_kwargs = _trainer_options(Trainer, compare_threads)

    name, ((x_train, t_train), (x_test, t_test)) = _load_data(args)
    if args.net != "mlp":  # the convnets take (N, 1, H, W) images
        side = math.isqrt(x_train.shape[1])
        x_train = x_train.reshape(-1, 1, side, side)
        x_test = x_test.reshape(-1, 1, side, side)
        # the book's ch07/ch08 runs score 1000 images per epoch; the final score is on all
        trainer_kwargs.setdefault("evaluate_sample_num_per_epoch", 1000)
    dtype = np.dtype(args.dtype)
    iter_per_epoch = max(math.ceil(x_train.shape[0] / args.batch_size), 1)
    iters = ((args.iters or 10000) if args.epochs is None
             else max(int(args.epochs * iter_per_epoch), 1))
    total_epochs = math.ceil(iters / iter_per_epoch)
    threads_said = ("one BLAS thread per training thread" if compare_threads is None
                    else f"{compare_threads} BLAS thread(s), as the book's run")
    print(f"{name}: {x_train.shape[0]} training and {x_test.shape[0]} test images; "
          f"{iters} iterations ({total_epochs} epochs) of batch {args.batch_size}, "
          f"{args.optimizer} lr {args.lr}, {dtype.name}"
          f"{'' if args.precision is None else f' ({args.precision} GEMM operands)'}, "
          + (f"hidden {args.hidden} {args.activation}"
             f"{' + batch normalization' * args.batchnorm}"
             f"{'' if args.dropout is None else f' + dropout {args.dropout}'}"
             if args.net == "mlp"
             else {"simpleconv": "SimpleConvNet", "deepconv": "DeepConvNet"}[args.net]
             + f" (hidden {args.hidden[0]})")
          + f"; {threads_said}", flush=True)

    network = _make_network(args, math.prod(x_train.shape[1:]), 10, dtype)
    trainer_class = _command_trainer(total_epochs, args.quiet)
    trainer = trainer_class(network, x_train, t_train, x_test, t_test,
                            mini_batch_size=args.batch_size, optimizer=args.optimizer,
                            optimizer_param={"lr": args.lr}, verbose=False, seed=args.seed,
                            max_iter=iters, **trainer_kwargs)
    trainer.bar = _progress_bar(iters, args.quiet)
    start = time.perf_counter()
    try:
        accuracy = trainer.train()
    finally:
        if trainer.bar is not None:
            trainer.bar.close()
    wall = time.perf_counter() - start
    correct = int(round(accuracy * x_test.shape[0]))
    print(f"fastnn: test accuracy {accuracy:.4f}, {correct} of {x_test.shape[0]} {name} test "
          f"images, {wall:.2f} s for {iters} iterations with evaluations, "
          f"{1e6 * wall / iters:.0f} us per iteration", flush=True)
    if args.save:
        from fastnn.io import save_network

        save_network(args.save, network, info={
            "dataset": name, "test_accuracy": float(accuracy), "iterations": iters,
            "batch_size": args.batch_size, "optimizer": args.optimizer, "lr": args.lr,
            "seed": args.seed})
        print(f"network saved to {args.save} (fastnn predict {args.save})")
    if args.plot:
        from fastnn.plots import training_curves

        training_curves(args.plot, trainer.train_loss_list, trainer.train_acc_list,
                        trainer.test_acc_list, iter_per_epoch=iter_per_epoch,
                        title=f"{name}, hidden {args.hidden} {args.activation}, "
                              f"{args.optimizer} lr {args.lr}, {dtype.name}",
                        final_test_acc=accuracy)
        print(f"training curves written to {args.plot}")
    if args.compare_reference:
        _compare_reference(args, (x_train, t_train, x_test, t_test), iters, wall,
                           compare_threads)


def _compare_reference(args, data, iters, fastnn_wall, n_threads):
    from threadpoolctl import threadpool_limits

    from fastnn.reference.train import train_neuralnet

    print(f"--- the same run with the book's train_neuralnet.py over the NumPy twins, on "
          f"{n_threads} BLAS thread(s) as fastnn's ---", flush=True)
    x_train, t_train, x_test, t_test = data
    with threadpool_limits(limits=n_threads):
        start = time.perf_counter()
        book_net, *_ = train_neuralnet(x_train, t_train, x_test, t_test, iters_num=iters,
                                       batch_size=args.batch_size, learning_rate=args.lr,
                                       hidden_size=args.hidden[0], seed=args.seed,
                                       verbose=False)
        book_wall = time.perf_counter() - start
    book_accuracy = book_net.accuracy(x_test, t_test)
    print(f"book:   test accuracy {book_accuracy:.4f}, {book_wall:.2f} s, "
          f"{1e6 * book_wall / iters:.0f} us per iteration")
    print(f"fastnn is {book_wall / fastnn_wall:.2f}x faster (both on {n_threads} BLAS "
          f"thread(s))")


# --- predict --------------------------------------------------------------------------------------

def _predict_arguments(p):
    p.add_argument("weights", type=input_file,
                   help="a network saved by fastnn train (.npz or .pkl), or weights alone "
                        "(the book's sample_weight.pkl, an older fastnn's .npz)")
    p.add_argument("--activation", choices=ACTIVATIONS, default=None,
                   help="hidden activation of weights alone (a file of fastnn train says its "
                        "own); default sigmoid for a pickle (the book's sample_weight.pkl), "
                        "relu for an .npz")
    _add_data(p)
    _add_threads(p)


def _test_data_for(args, path, network, description):
    """(name, (x_test, t_test)) of the data set the network was trained on: the one its file
    names, else the one its input size says (784: MNIST, 64: the digits)."""
    trained_on = (description or {}).get("info", {}).get("dataset")
    image_dim = getattr(network, "input_dim", None)  # a convnet takes (N, C, H, W) images
    inputs = (math.prod(image_dim) if image_dim is not None
              else network.affine_layers[0].W.shape[0])
    if trained_on is None:
        trained_on = {784: "MNIST", 64: "digits"}.get(inputs)
    if trained_on == "digits":
        from fastnn.datasets import load_digits

        _note(args, f"{path} was trained on scikit-learn's 8x8 digits: scored on them")
        _, test = load_digits(normalize=True, flatten=True)
    elif trained_on == "MNIST":
        _, test = _load_mnist(args)
    else:
        raise RuntimeError(f"{path}: a network of {inputs} inputs; MNIST has 784, the digits 64")
    if test[0].shape[1] != inputs:
        raise RuntimeError(f"{path}: a network of {inputs} inputs, but {trained_on} has "
                           f"{test[0].shape[1]}")
    if image_dim is not None:
        test = (test[0].reshape(-1, *image_dim), test[1])
    return trained_on, test


def _predict(args):
    from fastnn.io import load_network

    _set_threads(args.threads)
    try:
        network, description = load_network(args.weights, activation=args.activation,
                                             return_description=True)
    except Exception as exc:
        raise RuntimeError(_first_line(exc) if args.weights in str(exc)
                           else f"{args.weights}: {_first_line(exc)}") from exc
    trained_on, (x_test, t_test) = _test_data_for(args, args.weights, network, description)
    accuracy = network.accuracy(x_test, t_test)
    print(f"{args.weights}: test accuracy {accuracy:.4f} "
          f"({int(round(accuracy * x_test.shape[0]))} of {x_test.shape[0]} {trained_on} test "
          f"images)")


# --- bench ----------------------------------------------------------------------------------------

def _bench_arguments(p):
    p.add_argument("--quick", action="store_true", help="few cases and rounds (a smoke run)")
    _add_threads(p, default=1, extra="; the NumPy twins and PyTorch run on as many")
    p.add_argument("--rounds", type=count, default=7, help="timed rounds; the median is shown")
    p.add_argument("--json", type=output_file, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--png", type=output_file, metavar="PATH",
                   help="also plot the step's speed-up against batch size (1 to 10,000)")
    p.add_argument("--backends", action="store_true",
                   help="instead: the network steps and the step's GEMMs under each BLAS "
                        "backend installed (mkl, openblas, scipy; FASTNN_BLAS), side by side")


def _bench(args):
    if args.png:
        _needs_matplotlib("--png")
    if args.json and args.png and os.path.abspath(args.json) == os.path.abspath(args.png):
        raise UsageError("--json and --png name the same file")
    from fastnn.benchmark import bench, bench_backends

    n_threads = _set_threads(args.threads)  # clamped to the CPUs this process may use
    if args.backends:
        if args.png:
            raise UsageError("--backends and --png are separate runs")
        bench_backends(quick=args.quick, threads=n_threads, rounds=args.rounds,
                       json_path=args.json or None)
        return
    bench(quick=args.quick, threads=n_threads, rounds=args.rounds, json_path=args.json or None)
    if args.png:
        from fastnn.benchmark import scaling_plot

        scaling_plot(args.png, threads=n_threads)
        print(f"speed-up against batch size written to {args.png}")


# --- gradcheck ------------------------------------------------------------------------------------

def _gradcheck_arguments(p):
    p.add_argument("--hidden", type=count, nargs="+", default=[50], metavar="UNITS",
                   help="hidden layer sizes (50: the book's TwoLayerNet); several, or "
                        "--activation/--weight-decay, give a MultiLayerNet")
    p.add_argument("--activation", choices=ACTIVATIONS, default="relu",
                   help="activation of the hidden layers")
    p.add_argument("--weight-decay", type=nonnegative, default=0.0, metavar="LAMBDA",
                   help="adds 0.5 * LAMBDA * sum(W**2) to the loss")
    p.add_argument("--batch", type=count, default=3, help="images")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                   help="of the network")
    p.add_argument("--exact", action="store_true",
                   help="exact log-softmax loss instead of the book's -log(y + 1e-7)")
    p.add_argument("--seed", type=seed, default=None,
                   help="seed of the weights and random inputs (default: np.random, as the book)")
    _add_data(p)
    p.add_argument("--tol", type=rate, default=None,
                   help="fail (exit status 1) if a max relative difference exceeds this")
    _add_threads(p)


def _gradcheck_data(args, rng):
    """(x, t, description): MNIST's first training images, else random ones, with a note."""
    import numpy as np

    from fastnn.datasets import DatasetError

    try:
        (x_train, t_train), _ = _load_mnist(args, one_hot_label=True)  # as the book's
        return x_train[:args.batch], t_train[:args.batch], "MNIST training images"
    except (DatasetError, OSError) as exc:
        _note(args, f"MNIST not loaded ({_first_line(exc)}); using random inputs")
    x = rng.random((args.batch, 784))
    return x, np.eye(10)[rng.integers(0, 10, size=args.batch)], "random inputs"


def _gradcheck(args):
    """The book's gradient_check.py: ``W1:1.3e-10`` (mean |backprop - numerical|) per
    parameter, then the largest absolute and relative differences."""
    import numpy as np

    from fastnn.gradient import gradient_check
    from fastnn.nets import MultiLayerNet, TwoLayerNet

    _set_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    x, t, source = _gradcheck_data(args, rng)
    weights_rng = None if args.seed is None else rng
    if len(args.hidden) == 1 and args.activation == "relu" and args.weight_decay == 0:
        network = TwoLayerNet(784, args.hidden[0], 10, dtype=args.dtype, rng=weights_rng,
                              exact_loss=args.exact)
        name = f"TwoLayerNet(784, {args.hidden[0]}, 10)"
    else:
        network = MultiLayerNet(784, args.hidden, 10, activation=args.activation,
                                weight_decay_lambda=args.weight_decay, dtype=args.dtype,
                                rng=weights_rng, exact_loss=args.exact)
        name = f"MultiLayerNet(784, {args.hidden}, 10, {args.activation!r})"
    loss = "exact log-softmax loss" if args.exact else "the book's loss"
    print(f"{name}, {args.dtype}, {len(x)} {source}, {loss}")
    start = time.perf_counter()
    diffs = gradient_check(network, x, t)
    print(f"(numerical gradient and backprop: {1e3 * (time.perf_counter() - start):.1f} ms)")
    width = max(len(key) for key in diffs) + 1
    for key, d in diffs.items():
        print(f"{key + ':' + format(d.mean_abs, '.6g'):<{width + 13}}"
              f"  max abs {d.max_abs:<9.3g}  max rel {d.max_rel:.3g}")
    failed = [key for key, d in diffs.items() if args.tol is not None and d.max_rel > args.tol]
    if failed:
        worst = max(failed, key=lambda key: diffs[key].max_rel)
        raise RuntimeError(f"{len(failed)} of {len(diffs)} parameters differ by more than "
                           f"--tol {args.tol:g} (worst: {worst}, max rel "
                           f"{diffs[worst].max_rel:.3g})")


# --- plot -----------------------------------------------------------------------------------------

FIGURES = ("activations", "softmax", "descent")


def _plot_arguments(p):
    p.add_argument("figure", choices=FIGURES,
                   help="activations: the activation functions and their gradients; softmax: "
                        "P(y) per class of a batch of MNIST test images, with the argmax; "
                        "descent: the contour of x0^2 + x1^2 with its gradient field and a "
                        "gradient-descent path")
    p.add_argument("--out", type=output_file, default=None, metavar="PNG",
                   help="the PNG to write (default: fastnn-FIGURE.png)")
    p.add_argument("--lr", type=rate, default=0.1, help="descent: learning rate")
    p.add_argument("--steps", type=count, default=20, help="descent: gradient-descent steps")
    p.add_argument("--init", type=_real, nargs=2, default=[-3.0, 4.0], metavar=("X0", "X1"),
                   help="descent: starting point")
    p.add_argument("--weights", type=input_file, default=None, metavar="FILE",
                   help="softmax: the network whose scores are shown (default: a TwoLayerNet "
                        "trained here for --iters steps)")
    p.add_argument("--iters", type=count, default=500, help="softmax: training steps")
    p.add_argument("--batch", type=count, default=10, help="softmax: test images shown")
    _add_data(p)
    p.add_argument("--seed", type=seed, default=0, help="softmax: which images, the weights")


def _plot(args):
    _needs_matplotlib("fastnn plot")
    if args.batch > 50:
        raise UsageError(f"--batch {args.batch}: the table shows at most 50 images")
    from fastnn import plots

    out = args.out or f"fastnn-{args.figure}.png"
    if args.out is None:
        try:
            output_file(out)
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"--out: {exc}") from None
    if args.figure == "activations":
        plots.activations(out)
        said = "the activation functions and their gradients"
    elif args.figure == "descent":
        _, path = plots.descent(out, lr=args.lr, init=args.init, steps=args.steps)
        said = (f"gradient descent from {tuple(args.init)} with lr {args.lr}: "
                f"{args.steps} steps to ({path[-1][0]:.3g}, {path[-1][1]:.3g})")
    else:
        said = _plot_softmax(args, out, plots)
    print(f"{out}: {said}")


def _plot_softmax(args, out, plots):
    import numpy as np

    from fastnn.functions import softmax

    if args.weights:
        from fastnn.io import load_network

        network, description = load_network(args.weights, return_description=True)
        name, (x_test, t_test) = _test_data_for(args, args.weights, network, description)
        what = args.weights
    else:
        from fastnn.nets import TwoLayerNet
        from fastnn.optim import SGD

        name, ((x_train, t_train), (x_test, t_test)) = _load_data(args)
        network = TwoLayerNet(x_train.shape[1], 50, 10, rng=args.seed)
        rng, optimizer = np.random.default_rng(args.seed), SGD(lr=0.1)
        for _ in range(args.iters):
            batch = rng.integers(0, x_train.shape[0], 100)
            optimizer.update(network.params, network.gradient(x_train[batch], t_train[batch]))
        what = f"TwoLayerNet after {args.iters} steps on {name}"
    n = min(args.batch, x_test.shape[0])
    rows = np.random.default_rng(args.seed).choice(x_test.shape[0], n, replace=False)
    probabilities = softmax(network.predict(x_test[rows]))
    side = int(round(math.sqrt(x_test.shape[1])))
    images = x_test[rows].reshape(-1, side, side) if side * side == x_test.shape[1] else None
    plots.softmax_table(out, probabilities, t_test[rows], images=images,
                        title=f"softmax of {what}: P(y) per class")
    right = int(np.sum(probabilities.argmax(axis=1) == t_test[rows]))
    return (f"P(y) per class for {n} {name} test images ({what}); the argmax is right for "
            f"{right} of {n}")


# --- the command ----------------------------------------------------------------------------------

def _search_arguments(p):
    from fastnn import search  # its arguments and its run live with it; Dask only when used

    search.add_arguments(p)


def _search(args):
    from fastnn import search

    return search.run(args)


COMMANDS = [
    # name, help, arguments, run
    ("train", "train a network on MNIST (the main job)", _train_arguments, _train),
    ("predict", "test accuracy of a saved network", _predict_arguments, _predict),
    ("bench", "side-by-side speed table against the NumPy twins", _bench_arguments, _bench),
    ("gradcheck", "backprop against numerical gradients (the book's gradient_check.py)",
     _gradcheck_arguments, _gradcheck),
    ("plot", "the lecture notes' figures, drawn by fastnn's own functions", _plot_arguments,
     _plot),
    ("search", "the book's hyperparameter search, on a Dask cluster or locally",
     _search_arguments, _search),
]


def build_parser():
    """The argument parser of every command."""
    parser = _Parser(prog="fastnn", description=__doc__, formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"fastnn {fastnn.__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="a traceback with every error (also FASTNN_DEBUG=1)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=_Parser)
    for name, text, add_arguments, run in COMMANDS:
        p = commands.add_parser(name, help=text, description=text, formatter_class=_Formatter)
        add_arguments(p)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="a traceback with every error (also FASTNN_DEBUG=1)")
        p.set_defaults(run=run)
    return parser


def _mnist_not_found(exc):
    """load_mnist's many-line message in one: what failed and where it looked."""
    lines = str(exc).splitlines()
    what = lines[0].rstrip(":. ")
    reasons = [line.split(": ", 1)[-1] for line in lines[1:] if line.startswith("  http")]
    if reasons:
        what += f" ({reasons[-1].rstrip('.')})"
    folders = []
    if "Looked in:" in lines:
        for line in lines[lines.index("Looked in:") + 1:]:
            if not line.startswith("  "):
                break
            folders.append(line.strip())
    return what + (f"; looked in {', '.join(folders)}" if folders else "")


def _first_line(exc):
    from fastnn.datasets import DatasetNotFoundError

    if isinstance(exc, DatasetNotFoundError):
        return _mnist_not_found(exc)
    text = str(exc).strip()
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = f"missing {exc.args[0]!r}"
    return (text.splitlines()[0] if text else "") or type(exc).__name__


def main(argv=None):
    """Run the fastnn command; returns its exit status (0, 1 at run time, 2 for arguments)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if argv[:1] == ["book"]:
        # a book script's own arguments follow it, as after `python SCRIPT`: the runner parses
        # only its options before the script's name
        from fastnn.book.runner import main as book

        return book(argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or argparse's one-line error
        return exc.code if isinstance(exc.code, int) else 2
    debug = args.debug or os.environ.get("FASTNN_DEBUG", "") not in ("", "0")
    prog = f"fastnn {args.command}"

    def note(message, category, *rest, **kwargs):
        print(f"{prog}: note: {message}", file=sys.stderr, flush=True)

    from fastnn import threads

    ceiling = threads.get_num_threads()  # --threads sets it for this command only
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = note
        try:
            return args.run(args) or 0
        except UsageError as exc:
            if debug:
                raise
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            if debug:
                raise
            print(f"{prog}: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:
            if debug:
                raise
            print(f"{prog}: error: {_first_line(exc)}", file=sys.stderr)
            return 1
        finally:
            threads.set_num_threads(ceiling)


if __name__ == "__main__":
    sys.exit(main())
