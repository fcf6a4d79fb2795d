"""``python -m fastnn book [--nets] SCRIPT [ARGS...]``: a script of the book, unchanged, on fastnn.

The script runs as ``python SCRIPT ARGS...`` would run it: in the current working directory,
with ``sys.argv == [SCRIPT, *ARGS]``, ``__file__`` its absolute path, ``__name__ ==
"__main__"`` and ``sys.path[0]`` its folder (so the book's ``sys.path.append(os.pardir)`` and
the Korean edition's ``__file__``-relative paths work).  A finder placed first on
``sys.meta_path`` answers the book's shared modules with fastnn's (:data:`BOOK_MODULES`), and,
with ``--nets``, the chapters' own network modules with fastnn's networks
(:data:`NET_MODULES`); every other import is Python's.  The runner prints one line to stderr
saying what it mapped; a script that uses a name of the book that fastnn lacks stops with an
error naming the name and the module.
"""
import argparse
import builtins
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import os
import re
import sys
import traceback
import types

__all__ = ["BOOK_MODULES", "NET_MODULES", "BookFinder", "run_script", "main"]

#: The book's shared modules and the fastnn modules that answer them.
BOOK_MODULES = {
    "common": "fastnn.book.common",
    "common.functions": "fastnn.book.common.functions",
    "common.layers": "fastnn.book.common.layers",
    "common.gradient": "fastnn.book.common.gradient",
    "common.optimizer": "fastnn.book.common.optimizer",
    "common.trainer": "fastnn.book.common.trainer",
    "common.util": "fastnn.book.common.util",
    "common.multi_layer_net": "fastnn.book.common.multi_layer_net",
    "common.multi_layer_net_extend": "fastnn.book.common.multi_layer_net_extend",
    "dataset": "fastnn.book.dataset",
    "dataset.mnist": "fastnn.book.dataset.mnist",
}
_PACKAGES = ("common", "dataset")

#: With ``--nets``: the chapters' network modules (``two_layer_net`` is chapter 4's or 5's,
#: decided by the file the script would import).
NET_MODULES = {
    "two_layer_net": {"ch04": "fastnn.book.nets.ch04_two_layer_net",
                      "ch05": "fastnn.book.nets.ch05_two_layer_net"},
    "simple_convnet": "fastnn.book.nets.simple_convnet",
    "deep_convnet": "fastnn.book.nets.deep_convnet",
}


class _Alias(importlib.abc.Loader):
    """Loads a book module name as the fastnn module that answers it (the same object)."""

    def __init__(self, target):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module):
        pass  # imported, and executed, under its fastnn name


def _two_layer_net_chapter(path):
    """'ch04' or 'ch05': which chapter's ``two_layer_net`` the script would import from
    ``path`` (chapter 4's computes with functions, chapter 5's with layers)."""
    spec = importlib.machinery.PathFinder.find_spec("two_layer_net", path)
    if spec is None or not spec.origin or not os.path.isfile(spec.origin):
        return "ch05"
    with open(spec.origin, encoding="utf-8", errors="replace") as f:
        source = f.read()
    return "ch05" if "Affine" in source or "common.layers" in source else "ch04"


class BookFinder(importlib.abc.MetaPathFinder):
    """Answers the book's module names with fastnn's modules (first on ``sys.meta_path``).

    Parameters
    ----------
    nets : bool
        Also answer the chapters' network modules (:data:`NET_MODULES`).
    """

    def __init__(self, nets=False):
        self.nets = nets
        self.mapped = {}  # book name -> fastnn module, as imported

    def find_spec(self, fullname, path=None, target=None):
        target_name = BOOK_MODULES.get(fullname)
        if target_name is None and self.nets and fullname in NET_MODULES:
            target_name = NET_MODULES[fullname]
            if isinstance(target_name, dict):
                chapter = _two_layer_net_chapter(sys.path)
                target_name = target_name[chapter]
        if target_name is None:
            if fullname.partition(".")[0] in _PACKAGES:
                known = ", ".join(name for name in BOOK_MODULES if "." in name)
                raise ModuleNotFoundError(
                    f"fastnn book: {fullname} is not one of the book's modules that fastnn "
                    f"answers ({known})", name=fullname)
            return None
        self.mapped[fullname] = target_name
        return importlib.util.spec_from_loader(fullname, _Alias(target_name),
                                               is_package=fullname in _PACKAGES)


def _missing_message(exc):
    """The runner's explanation of ``exc`` when a name of the book that fastnn lacks caused
    it, else None."""
    from fastnn.book._exports import MissingName, missing_names

    if isinstance(exc, MissingName):
        return str(exc)
    missing = missing_names()
    if isinstance(exc, NameError) and not isinstance(exc, UnboundLocalError):
        for (_, name), message in missing.items():
            if name == exc.name:
                return message
    if type(exc) is ImportError:
        # Python names the module by its own name, the fastnn module's
        book_names = {target: name for name, target in BOOK_MODULES.items()}
        for name, target in NET_MODULES.items():
            for t in target.values() if isinstance(target, dict) else (target,):
                book_names[t] = name
        module = book_names.get(exc.name, exc.name)
        found = re.search(r"cannot import name '(\w+)'", str(exc))
        if found and (module, found.group(1)) in missing:
            return missing[module, found.group(1)]
    return None


def _script_traceback(exc, script):
    """The traceback from the script's first frame on, as ``python SCRIPT`` would show it."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != script:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


def _run_as_main(path):
    """Execute the file at ``path`` as ``python path`` does: in a new ``__main__`` module
    (``__file__`` the absolute path, ``sys.argv`` left as set; runpy.run_path would put the
    absolute path into ``sys.argv[0]``)."""
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__loader__ = importlib.machinery.SourceFileLoader("__main__", path)
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    with io.open_code(path) as f:
        source = f.read()
    exec(compile(source, path, "exec"), main.__dict__)


def run_script(script, args=(), nets=False, numpy_only=False, seed=None, data_dir=None):
    """Run ``script`` with ``args`` as ``python script *args`` would, its book modules
    answered by fastnn; returns the exit status (0, or a ``SystemExit``'s).

    Parameters
    ----------
    script : str or os.PathLike
    args : sequence of str
    nets : bool
        Also answer the chapters' network modules with fastnn's networks.
    numpy_only : bool
        Map nothing: the book's own modules on NumPy (the baseline of comparisons).
    seed : int or None
        ``np.random.seed(seed)`` before the script starts.
    data_dir : str or None
        The MNIST folder of ``dataset.mnist`` (else ``$FASTNN_DATA``, the book's
        ``dataset/`` folder, fastnn's cache).
    """
    path = os.path.abspath(os.fspath(script))
    if not os.path.isfile(path):
        print(f"fastnn book: {script}: no such file", file=sys.stderr)
        return 2
    finder = None
    if numpy_only:
        print("fastnn book: nothing mapped (--numpy): the book's own modules", file=sys.stderr)
    else:
        finder = BookFinder(nets=nets)
        sys.meta_path.insert(0, finder)
        # modules of these names imported before (in-process use) give way during the run
        names = [*BOOK_MODULES, *(NET_MODULES if nets else ())]
        displaced = {name: sys.modules.pop(name) for name in names if name in sys.modules}
        groups = {}
        for name in BOOK_MODULES:
            package, _, module = name.partition(".")
            if module:
                groups.setdefault(package, []).append(module)
        mapped = [f"{package}.{{{','.join(modules)}}}" if len(modules) > 1
                  else f"{package}.{modules[0]}" for package, modules in groups.items()]
        if nets:
            mapped.append("the chapters' " + ", ".join(NET_MODULES))
        said = ", ".join(mapped[:-1]) + " and " + mapped[-1]
        print(f"fastnn book: {said} answered by fastnn", file=sys.stderr)
    dataset_package = importlib.import_module("fastnn.book.dataset")
    saved_data_dir = dataset_package.DATA_DIR
    if data_dir is not None:
        dataset_package.DATA_DIR = data_dir
    if seed is not None:
        import numpy as np

        np.random.seed(seed)
    saved_argv, saved_path0 = sys.argv, sys.path[0] if sys.path else None
    sys.argv = [os.fspath(script), *args]
    folder = os.path.dirname(path)
    if sys.path:
        sys.path[0] = folder
    else:
        sys.path.insert(0, folder)
    main_module = sys.modules.get("__main__")
    try:
        _run_as_main(path)
        return 0
    except SystemExit as exc:
        code = exc.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    except BaseException as exc:  # noqa: BLE001 - reported as Python reports a script's error
        if isinstance(exc, KeyboardInterrupt):
            raise
        print(_script_traceback(exc, path), end="", file=sys.stderr)
        message = _missing_message(exc) if finder is not None else None
        if message is not None:
            print(f"fastnn book: {message}", file=sys.stderr)
        return 1
    finally:
        dataset_package.DATA_DIR = saved_data_dir
        if main_module is not None:
            sys.modules["__main__"] = main_module
        sys.argv = saved_argv
        if saved_path0 is not None:
            sys.path[0] = saved_path0
        if finder is not None:
            if finder in sys.meta_path:
                sys.meta_path.remove(finder)
            # the book's names leave with the finder, so that a later import finds the book's
            for name, target in finder.mapped.items():
                if sys.modules.get(name) is sys.modules.get(target):
                    sys.modules.pop(name, None)
            sys.modules.update(displaced)


def main(argv=None):
    """The ``book`` command of ``python -m fastnn``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="fastnn book",
        description="Run a script of the book unchanged, with the book's common/ and "
                    "dataset/ modules answered by fastnn (run it from the script's folder, "
                    "as the book's scripts expect).")
    parser.add_argument("--nets", action="store_true",
                        help="also answer the chapters' two_layer_net, simple_convnet and "
                             "deep_convnet with fastnn's networks")
    parser.add_argument("--numpy", action="store_true",
                        help="map nothing: run the book's own modules (for comparisons)")
    parser.add_argument("--seed", type=int, default=None,
                        help="np.random.seed(SEED) before the script starts")
    parser.add_argument("--data-dir", default=None, help="folder of the MNIST IDX files")
    parser.add_argument("script", help="the book's script, e.g. train_neuralnet.py")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the script's arguments")
    opts = parser.parse_args(argv)
    if opts.nets and opts.numpy:
        parser.error("--nets and --numpy exclude each other")
    return run_script(opts.script, opts.args, nets=opts.nets, numpy_only=opts.numpy,
                      seed=opts.seed, data_dir=opts.data_dir)


if __name__ == "__main__":
    sys.exit(main())
