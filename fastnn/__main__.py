"""The ``fastnn`` command: ``python -m fastnn {train,predict,bench,gradcheck} ...``."""
import argparse
import sys


def _bench(args):
    from fastnn.bench import bench

    bench(quick=args.quick, threads=args.threads, rounds=args.rounds, json_path=args.json)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastnn", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("bench", help="side-by-side speed table against the NumPy twins")
    p.add_argument("--quick", action="store_true", help="few cases and rounds (a smoke run)")
    p.add_argument("--threads", type=int, default=None, help="BLAS/PyTorch threads for all")
    p.add_argument("--rounds", type=int, default=7, help="timed rounds; the median is shown")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.set_defaults(run=_bench)

    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    sys.exit(main())
