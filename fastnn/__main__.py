"""The fastnn command: train on MNIST, score saved weights, benchmark, check gradients.

  python -m fastnn train      the book's TwoLayerNet on MNIST (the project's main job)
  python -m fastnn predict W  test accuracy of saved weights
  python -m fastnn bench      side-by-side speed table against the NumPy twins
  python -m fastnn gradcheck  backprop against numerical gradients, per parameter
  python -m fastnn book S     a script of the book, unchanged, on fastnn (fastnn/book/runner.py)
"""
import argparse
import sys
import time

import numpy as np


def _load_data(data_dir, offline_fallback=True):
    """MNIST (normalised, flat); without it, scikit-learn's 8x8 digits, said in one line."""
    from fastnn.datasets import DatasetNotFoundError, load_digits, load_mnist

    try:
        return "MNIST", load_mnist(normalize=True, flatten=True, data_dir=data_dir)
    except DatasetNotFoundError:
        if not offline_fallback:
            raise
        print("MNIST is neither on this machine nor downloadable; training on scikit-learn's "
              "8x8 digits instead (set FASTNN_DATA or --data-dir to an MNIST folder)", flush=True)
        return "digits", load_digits(normalize=True, flatten=True)


def _make_network(args, input_size, output_size, dtype):
    from fastnn.nets import MultiLayerNet, TwoLayerNet

    if len(args.hidden) == 1 and args.activation == "relu" and not args.weight_decay:
        return TwoLayerNet(input_size, args.hidden[0], output_size, weight_init_std=0.01,
                           dtype=dtype, rng=args.seed)
    return MultiLayerNet(input_size, args.hidden, output_size, activation=args.activation,
                         weight_init_std=args.activation, weight_decay_lambda=args.weight_decay,
                         dtype=dtype, rng=args.seed)


def _train(args):
    from fastnn.io import save_params
    from fastnn.trainer import Trainer, plot_training

    if args.compare_reference and (args.optimizer.lower() != "sgd" or args.activation != "relu"
                                   or len(args.hidden) != 1 or args.weight_decay):
        raise SystemExit("fastnn train: --compare-reference runs the book's train_neuralnet.py, "
                         "a one-hidden-layer relu network trained by SGD without weight decay; "
                         "it would not be the same run")
    if args.threads:
        from fastnn.threads import set_num_threads

        set_num_threads(args.threads)
    name, ((x_train, t_train), (x_test, t_test)) = _load_data(args.data_dir)
    dtype = np.dtype(args.dtype)
    batches_per_epoch = max(x_train.shape[0] / args.batch_size, 1)
    iters = args.iters if args.epochs is None else int(args.epochs * batches_per_epoch)
    print(f"{name}: {x_train.shape[0]} training and {x_test.shape[0]} test images; "
          f"{iters} iterations of batch {args.batch_size}, {args.optimizer} lr {args.lr}, "
          f"{dtype.name}, hidden {args.hidden} {args.activation}", flush=True)

    network = _make_network(args, x_train.shape[1], 10, dtype)
    trainer = Trainer(network, x_train, t_train, x_test, t_test, mini_batch_size=args.batch_size,
                      optimizer=args.optimizer, optimizer_param={"lr": args.lr},
                      verbose=not args.quiet, seed=args.seed, max_iter=iters)
    start = time.perf_counter()
    accuracy = trainer.train()
    wall = time.perf_counter() - start
    print(f"fastnn: test accuracy {accuracy:.4f}, {wall:.2f} s for {iters} iterations with "
          f"evaluations, {1e6 * trainer.seconds_per_iter:.0f} us per iteration", flush=True)
    if args.save:
        save_params(args.save, network.params)
        print(f"weights saved to {args.save}")
    if args.plot:
        plot_training(trainer, args.plot)
        print(f"training curves written to {args.plot}")

    if args.compare_reference:
        from fastnn.reference.train import train_neuralnet

        print("--- the same run with the book's train_neuralnet.py over the NumPy twins ---",
              flush=True)
        start = time.perf_counter()
        book_net, *_ = train_neuralnet(x_train, t_train, x_test, t_test, iters_num=iters,
                                       batch_size=args.batch_size, learning_rate=args.lr,
                                       hidden_size=args.hidden[0], seed=args.seed,
                                       verbose=not args.quiet)
        book_wall = time.perf_counter() - start
        book_accuracy = book_net.accuracy(x_test, t_test)
        print(f"book:   test accuracy {book_accuracy:.4f}, {book_wall:.2f} s, "
              f"{1e6 * book_wall / max(iters, 1):.0f} us per iteration")
        print(f"fastnn is {book_wall / wall:.2f}x faster")


def _predict(args):
    from fastnn.io import load_params
    from fastnn.nets import MultiLayerNet

    params = load_params(args.weights)
    activation = args.activation or ("sigmoid" if args.weights.endswith((".pkl", ".pickle")) else "relu")
    network = MultiLayerNet.from_params(params, activation=activation)
    _, (_, (x_test, t_test)) = _load_data(args.data_dir, offline_fallback=False)
    accuracy = network.accuracy(x_test, t_test)
    print(f"{args.weights}: test accuracy {accuracy:.4f} "
          f"({int(round(accuracy * x_test.shape[0]))} of {x_test.shape[0]})")


def _bench(args):
    from fastnn.benchmark import bench

    bench(quick=args.quick, threads=args.threads, rounds=args.rounds, json_path=args.json)
    if args.png:
        from fastnn.benchmark import scaling_plot

        scaling_plot(args.png, threads=args.threads)
        print(f"speed-up against batch size written to {args.png}")


def _gradcheck(argv):
    from fastnn.gradient import gradcheck_cli

    return gradcheck_cli(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["gradcheck"]:
        return _gradcheck(argv[1:])
    if argv[:1] == ["book"]:
        from fastnn.book.runner import main as book

        return book(argv[1:])
    parser = argparse.ArgumentParser(prog="fastnn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("train", help="train a network on MNIST (the main job)")
    p.add_argument("--hidden", type=int, nargs="+", default=[50], help="hidden layer sizes")
    p.add_argument("--activation", choices=["relu", "sigmoid", "identity"], default="relu")
    p.add_argument("--optimizer", default="SGD",
                   help="SGD, Momentum, Nesterov, AdaGrad, RMSprop or Adam (any case)")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--iters", type=int, default=10000, help="steps (the book's 10000)")
    p.add_argument("--epochs", type=float, default=None, help="epochs instead of --iters")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="folder of the MNIST IDX files")
    p.add_argument("--save", default="fastnn-weights.npz", help="where to save the weights "
                   "(.npz, or .pkl for the book's pickle); '' to skip")
    p.add_argument("--plot", default=None, help="write the training curves to this PNG")
    p.add_argument("--compare-reference", action="store_true",
                   help="then run the book's train_neuralnet.py (NumPy twins, float64, SGD) "
                        "for as many iterations, and compare")
    p.add_argument("--threads", type=int, default=None,
                   help="cap on the BLAS threads of fastnn's large GEMMs outside training "
                        "(training runs one BLAS thread per core; see fastnn.threads)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    p.set_defaults(run=_train)

    p = commands.add_parser("predict", help="test accuracy of saved weights")
    p.add_argument("weights", help=".npz or the book's .pkl (e.g. sample_weight.pkl)")
    p.add_argument("--activation", choices=["relu", "sigmoid", "identity"], default=None,
                   help="hidden activation the weights were trained with; default relu for "
                        ".npz (fastnn train's networks), sigmoid for .pkl (the book's "
                        "sample_weight.pkl)")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(run=_predict)

    p = commands.add_parser("bench", help="side-by-side speed table against the NumPy twins")
    p.add_argument("--quick", action="store_true", help="few cases and rounds (a smoke run)")
    p.add_argument("--threads", type=int, default=1,
                   help="threads of every implementation: BLAS, fastnn, PyTorch (default 1)")
    p.add_argument("--rounds", type=int, default=7, help="timed rounds; the median is shown")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--png", metavar="PATH",
                   help="also plot the step's speed-up against batch size (1 to 10,000)")
    p.set_defaults(run=_bench)

    commands.add_parser("gradcheck", help="backprop against numerical gradients (see "
                        "'fastnn gradcheck --help')")
    commands.add_parser("book", help="run a script of the book unchanged on fastnn (see "
                        "'fastnn book --help')")

    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    sys.exit(main())
