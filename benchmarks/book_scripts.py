"""Every script of the book's chapters 3-8, on the book's NumPy and on fastnn: the README table.

    python benchmarks/book_scripts.py [--book-code DIR] [--mnist DIR] [--only ch05/...]
                                      [--modes numpy fastnn nets] [--workdir DIR]
                                      [--jsonl PATH] [--markdown PATH] [--json PATH]
                                      [--timeout S]
    python benchmarks/book_scripts.py --assemble --jsonl PATH [--markdown PATH]

On a shared machine, run it one script at a time under a lock and assemble the table after::

    for s in $(python benchmarks/book_scripts.py --list); do
        flock /work/notes/bench.lock python benchmarks/book_scripts.py --only $s \
            --workdir /tmp/book-work --jsonl runs.jsonl
    done
    python benchmarks/book_scripts.py --assemble --jsonl runs.jsonl --markdown table.md

``--workdir`` keeps the prepared copy (and both loaders' MNIST caches) between invocations;
``--jsonl`` appends one line per script and run; ``--assemble`` builds the table from those
lines, the median of every run of a script per mode (a script run several times, e.g. to
interleave rounds, shows its median and its range).

For each script of ``ch03``..``ch08`` in the book's snapshot (``../shared/datasets/book-code``
beside the checkout by default), in a copy of the snapshot in a temporary folder (the MNIST
files copied into its ``dataset/``, so the book's own loader and fastnn's read the same
files), the script runs as ``python SCRIPT`` from its folder, three ways, each in a fresh
process with ``np.random.seed(0)`` first and one BLAS thread:

* **NumPy**: ``python -m fastnn book --numpy``: nothing mapped, the book's own modules;
* **fastnn**: ``python -m fastnn book``: the book's ``common/`` and ``dataset/`` answered by
  fastnn, the chapters' own networks as the book wrote them (on fastnn's layers);
* **--nets**: ``python -m fastnn book --nets``: the chapters' networks are fastnn's too (only
  for scripts that import one; elsewhere it is the fastnn run).

The table gives whether the script runs on fastnn (exit status 0, else the error's last line),
whether its printed figures equal the NumPy run's (``identical``; ``rel <= x``, the largest
relative difference of the printed numbers when the lines are otherwise the same; for the
gradient checks, whose printed numbers are themselves rounding errors, ``as small`` when each
is at most 10 times the book's or below 1e-6), and wall times (the whole process, Python's
start and the imports included, about 0.3 s).  Long scripts are cut as listed in ``CUTS``
(each cut is shown in the table); files a script writes (``params.pkl``...) are restored after
each run so that every run sees the snapshot's.  The MNIST parse caches of both loaders are
made before the timed runs.
"""
import argparse
import functools
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BOOK_CODE = ROOT.parent / "shared" / "datasets" / "book-code"
DEFAULT_MNIST = ROOT.parent / "shared" / "datasets" / "mnist"
MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
CHAPTERS = ("ch03", "ch04", "ch05", "ch06", "ch07", "ch08")

#: script -> (what the cut does, [(text in the script, replacement)]).  The book's own comments
#: suggest the first two ("if processing takes long, reduce the data"); the others shorten
#: loops of the same step to keep the table's run short, the per-step work unchanged.
CUTS = {
    "ch07/train_convnet.py": (
        "the book's commented-out 5,000/1,000-image subset, 1 epoch of 20", [
            ("#x_train, t_train = x_train[:5000], t_train[:5000]",
             "x_train, t_train = x_train[:5000], t_train[:5000]"),
            ("#x_test, t_test = x_test[:1000], t_test[:1000]",
             "x_test, t_test = x_test[:1000], t_test[:1000]"),
            ("max_epochs = 20", "max_epochs = 1"),
        ]),
    "ch08/train_deepnet.py": (
        "ch07's 5,000/1,000-image subset, 1 epoch of 20", [
            ("(x_train, t_train), (x_test, t_test) = load_mnist(flatten=False)\n",
             "(x_train, t_train), (x_test, t_test) = load_mnist(flatten=False)\n"
             "x_train, t_train = x_train[:5000], t_train[:5000]\n"
             "x_test, t_test = x_test[:1000], t_test[:1000]\n"),
            ("epochs=20,", "epochs=1,"),
        ]),
    "ch06/hyperparameter_optimization.py": (
        "10 trials of 100", [("optimization_trial = 100", "optimization_trial = 10")]),
    "ch06/overfit_dropout.py": (
        "31 epochs of 301", [("epochs=301,", "epochs=31,")]),
}
# the scripts whose printed numbers are differences between two gradients
GRADIENT_CHECKS = ("gradient_check",)
NET_IMPORT = re.compile(r"^\s*from (two_layer_net|simple_convnet|deep_convnet) import",
                        re.MULTILINE)
# a printed number, not the digits of a name such as W1
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|\bnan\b|\binf\b")


def apply_cuts(book_copy, cuts=CUTS):
    """Edit the scripts of ``book_copy`` (a copy of the snapshot) as ``cuts`` says."""
    for script, (_, edits) in cuts.items():
        path = Path(book_copy) / script
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        for old, new in edits:
            if old not in text:
                raise ValueError(f"{script}: the cut expects {old!r}, which is not there")
            text = text.replace(old, new)
        path.write_text(text, encoding="utf-8")


def prepare_copy(book_code, mnist, folder):
    """A copy of the snapshot in ``folder`` with the MNIST files in its ``dataset/``."""
    copy = Path(folder) / "book-code"
    shutil.copytree(book_code, copy)
    for root, dirs, files in os.walk(copy):  # the snapshot is read-only
        for name in dirs + files:
            os.chmod(os.path.join(root, name), 0o755 if name in dirs else 0o644)
        os.chmod(root, 0o755)
    for name in MNIST_FILES:
        shutil.copy(Path(mnist) / name, copy / "dataset" / name)
    return copy


#: The interpreter of the runs, and their PYTHONPATH (None: none): ``--python`` and
#: ``--pythonpath`` set them, to time an installed fastnn rather than an editable install,
#: whose import asks meson-python to check the build (it runs ninja) in every new process.
PYTHON = [sys.executable]
PYTHONPATH = [None]


def environment(cache):
    env = {k: v for k, v in os.environ.items()
           if k not in ("FASTNN_DATA", "PYTHONPATH", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env.update(MPLBACKEND="Agg", XDG_CACHE_HOME=str(cache), OPENBLAS_NUM_THREADS="1",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    if PYTHONPATH[0]:
        env["PYTHONPATH"] = PYTHONPATH[0]
    return env


def run(script_path, mode, env, timeout, seed=0):
    """``(returncode, stdout, stderr, seconds)`` of one run of a script (mode: 'numpy',
    'fastnn' or 'nets')."""
    flags = {"numpy": ["--numpy"], "fastnn": [], "nets": ["--nets"]}[mode]
    cmd = [PYTHON[0], "-m", "fastnn", "book", *flags, "--seed", str(seed), script_path.name]
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=script_path.parent, env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return None, out, f"timed out after {timeout} s", time.perf_counter() - start
    return done.returncode, done.stdout, done.stderr, time.perf_counter() - start


ADDRESS = re.compile(r"\b0x[0-9a-fA-F]+\b")  # an object's address in a repr differs by run


def compare(ours, books, gradient_check=False):
    """How the printed figures of a fastnn run compare with the book's run's."""
    ours, books = ADDRESS.sub("0x?", ours), ADDRESS.sub("0x?", books)
    if ours == books:
        return "identical"
    a, b = ours.splitlines(), books.splitlines()
    if len(a) != len(b) or any(NUMBER.sub("#", x) != NUMBER.sub("#", y) for x, y in zip(a, b)):
        return "differ"
    worst = 0.0
    for x, y in zip(a, b):
        for u, w in zip(NUMBER.findall(x), NUMBER.findall(y)):
            u, w = float(u), float(w)
            if gradient_check:
                if not (abs(u) <= max(10 * abs(w), 1e-6)):
                    return "larger"
                continue
            if u != w:
                worst = max(worst, abs(u - w) / max(abs(w), 1e-300))
    if gradient_check:
        return "as small"
    return f"rel <= {worst:.0e}" if worst else "identical"


def _restore(chapter, pristine):
    """Put back the snapshot's files of ``chapter`` that a run changed or created."""
    for path in chapter.iterdir():
        if path.name == "__pycache__":
            continue
        original = pristine / path.name
        if not original.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        elif path.is_file() and path.stat().st_mtime_ns != original.stat().st_mtime_ns:
            shutil.copy2(original, path)


def last_error_line(stderr):
    lines = [line for line in stderr.strip().splitlines()
             if line.strip() and not line.startswith("fastnn book: common.")
             and "UserWarning" not in line and "plt.show()" not in line]
    return lines[-1].strip() if lines else "no output"


def warm_caches(copy, env):
    """Parse MNIST once for each loader (the book's mnist.pkl, fastnn's cache), untimed."""
    code = "from dataset.mnist import load_mnist; load_mnist()"
    for flags in (["--numpy"], []):
        probe = copy / "ch03" / "_warm.py"
        probe.write_text("import sys, os\nsys.path.append(os.pardir)\n" + code + "\n")
        subprocess.run([PYTHON[0], "-m", "fastnn", "book", *flags, probe.name],
                       cwd=probe.parent, env=env, check=True, capture_output=True)
        probe.unlink()


def scripts_of(copy, only=None):
    found = [f"{ch}/{p.name}" for ch in CHAPTERS for p in sorted((copy / ch).glob("*.py"))]
    return [s for s in found if not only or s in only]


MODES = ("numpy", "fastnn", "nets")


def prepare(book_code, mnist, folder):
    """``(copy, pristine, env)``: the cut copy of the snapshot that the runs use, an untouched
    cut copy to restore files from, and the runs' environment, all in ``folder``; prepared
    once (a later call with the same ``folder`` reuses them and their MNIST caches)."""
    folder = Path(folder)
    copy, pristine = folder / "book-code", folder / "pristine" / "book-code"
    env = environment(folder / "cache")
    if not (folder / ".prepared").is_file():
        for old in (copy, pristine.parent, folder / "cache"):
            if old.exists():
                shutil.rmtree(old)
        prepare_copy(book_code, mnist, folder / "pristine")
        prepare_copy(book_code, mnist, folder)
        apply_cuts(copy)
        apply_cuts(pristine)
        warm_caches(copy, env)
        shutil.copy2(copy / "dataset" / "mnist.pkl", pristine / "dataset" / "mnist.pkl")
        (folder / ".prepared").write_text("")
    return copy, pristine, env


def measure(book_code, mnist, only=None, timeout=3600, log=print, progress=None,
            workdir=None, modes=MODES):
    """The rows of the table, one dict per script; ``progress(rows)`` after each script.

    ``workdir``: the folder of :func:`prepare` (a temporary one by default); ``modes``: the
    ways to run each script (``nets`` only where the script imports a chapter's network).
    """
    with tempfile.TemporaryDirectory(prefix="fastnn-book-") as tmp:
        copy, pristine, env = prepare(book_code, mnist, workdir or tmp)
        rows = []
        for script in scripts_of(copy, only):
            path = copy / script
            script_modes = [m for m in modes if m != "nets"
                            or NET_IMPORT.search(path.read_text(encoding="utf-8"))]
            row = {"script": script, "cut": CUTS.get(script, ("", []))[0],
                   "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                   "loadavg": [round(os.getloadavg()[0], 2)]}
            for mode in script_modes:
                code, out, err, seconds = run(path, mode, env, timeout)
                _restore(path.parent, pristine / path.parent.name)
                row[mode] = {"ok": code == 0, "seconds": seconds, "stdout": out,
                             "error": None if code == 0 else last_error_line(err)}
                log(f"{script:42s} {mode:6s} {'ok ' if code == 0 else 'ERR'} {seconds:8.2f} s"
                    + ("" if code == 0 else f"  {row[mode]['error']}"), flush=True)
            row["loadavg"].append(round(os.getloadavg()[0], 2))
            check = any(word in script for word in GRADIENT_CHECKS)
            for mode in script_modes:
                if mode != "numpy" and "numpy" in row and row[mode]["ok"] and row["numpy"]["ok"]:
                    row[mode]["figures"] = compare(row[mode]["stdout"], row["numpy"]["stdout"],
                                                   check)
            rows.append(row)
            if progress is not None:
                progress(rows)
        return rows


def _median(values):
    values = sorted(values)
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def merge(rows):
    """One entry per script from the rows of several runs (a script run ``n`` times, e.g.
    interleaved rounds): per mode the seconds of every run, and per mode the ratio of the
    NumPy run's time to its time within each run (the ratio of one moment, not of two)."""
    merged = {}
    for row in rows:
        entry = merged.setdefault(row["script"], {"script": row["script"], "cut": row["cut"],
                                                  "loadavg": [], "modes": {}, "ratios": {}})
        entry["loadavg"] += row.get("loadavg", [])
        for mode in MODES:
            cell = row.get(mode)
            if cell is None:
                continue
            into = entry["modes"].setdefault(mode, {"seconds": [], "errors": [],
                                                    "figures": []})
            if cell["ok"]:
                into["seconds"].append(cell["seconds"])
            else:
                into["errors"].append(cell["error"])
            if cell.get("figures"):
                into["figures"].append(cell["figures"])
            base = row.get("numpy")
            if mode != "numpy" and base and base["ok"] and cell["ok"]:
                entry["ratios"].setdefault(mode, []).append(base["seconds"] / cell["seconds"])
    return sorted(merged.values(), key=lambda entry: entry["script"])  # chapter order


def _seconds(cell):
    if cell is None:
        return "-"
    if cell["errors"] and not cell["seconds"]:
        return "fails"
    values = cell["seconds"]
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{_median(values):.2f} ({min(values):.2f}-{max(values):.2f}, {len(values)} runs)"


def _ratio(values):
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}x"
    return f"{_median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


def _figures(cell):
    if cell is None or not cell["figures"]:
        return "-"
    # the worst of the runs: 'differ' before 'larger' before 'rel <= ...'
    kinds = sorted(set(cell["figures"]),
                   key=lambda f: (f != "differ", f != "larger", f != "as small",
                                  f == "identical", f))
    return kinds[0]


def markdown(rows):
    """The table of the rows of :func:`measure` (several rows of one script are merged)."""
    lines = ["| script | cut | runs on fastnn | figures | NumPy s | fastnn s | speed | "
             "--nets s | speed | figures (--nets) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for entry in merge(rows):
        modes = entry["modes"]
        base, fast, nets = modes.get("numpy"), modes.get("fastnn"), modes.get("nets")
        if fast is None:
            runs = "-"
        elif fast["errors"]:
            runs = f"no: {fast['errors'][0]}"
            if nets is not None and nets["seconds"] and not nets["errors"]:
                runs = f"with --nets only ({fast['errors'][0]})"
        else:
            runs = "yes"
        lines.append(
            f"| {entry['script']} | {entry['cut'] or '-'} | {runs} | {_figures(fast)} | "
            f"{_seconds(base)} | {_seconds(fast)} | {_ratio(entry['ratios'].get('fastnn'))} | "
            f"{_seconds(nets)} | {_ratio(entry['ratios'].get('nets'))} | {_figures(nets)} |")
    return "\n".join(lines)


def load_lines(path):
    """The rows appended to ``path`` by ``--jsonl`` runs, in order, and their headers."""
    rows, headers = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                headers.append(record.pop("header", ""))
                rows.append(record)
    return rows, headers


@functools.lru_cache(maxsize=None)
def header():
    import numpy

    import fastnn

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    where = subprocess.run([PYTHON[0], "-c", "import fastnn; print(fastnn.__file__)"],
                           env=environment(Path(tempfile.gettempdir())), capture_output=True,
                           text=True, cwd=tempfile.gettempdir()).stdout.strip()  # as the runs
    kind = "installed" if "site-packages" in where else "from its source tree"
    return (f"fastnn {fastnn.__version__} ({kind}: {where}), numpy {numpy.__version__}, "
            f"Python {platform.python_version()}; {cpu}, {os.cpu_count()} CPUs; one BLAS thread "
            f"(OPENBLAS_NUM_THREADS=1); {time.strftime('%Y-%m-%d %H:%M')}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--book-code", type=Path, default=DEFAULT_BOOK_CODE)
    parser.add_argument("--mnist", type=Path, default=DEFAULT_MNIST,
                        help="folder of the four MNIST .gz files")
    parser.add_argument("--only", nargs="+", help="scripts to run, e.g. ch05/train_neuralnet.py")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                        help="ways to run each script (default: all three)")
    parser.add_argument("--list", action="store_true",
                        help="print the scripts of the snapshot, one a line, and stop")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter of the runs (default: this one)")
    parser.add_argument("--pythonpath", help="PYTHONPATH of the runs (default: none)")
    parser.add_argument("--workdir", type=Path,
                        help="keep the prepared copy here between invocations")
    parser.add_argument("--jsonl", type=Path,
                        help="append one JSON line per script here (with --assemble: read)")
    parser.add_argument("--assemble", action="store_true",
                        help="build the table from the --jsonl lines; run nothing")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args(argv)
    if args.list:
        for chapter in CHAPTERS:
            for path in sorted((args.book_code / chapter).glob("*.py")):
                print(f"{chapter}/{path.name}")
        return
    if args.assemble:
        if args.jsonl is None:
            parser.error("--assemble reads the lines of --jsonl PATH")
        rows, headers = load_lines(args.jsonl)
        loads = [x for row in rows for x in row.get("loadavg", [])]
        starts = sorted(row["started"] for row in rows if "started" in row)
        note = (f"{len(rows)} runs from {starts[0]} to {starts[-1]}; load average "
                f"{min(loads):.1f}-{max(loads):.1f} (1-minute, before and after each run)"
                if starts and loads else "")
        table = (headers[-1] if headers else "") + ("\n" + note if note else "") + "\n\n" \
            + markdown(rows)
        if args.markdown:
            args.markdown.write_text(table + "\n")
        print(table)
        return
    for folder, what in ((args.book_code / "common", "the book's code"),
                         (args.mnist, "the MNIST files")):
        if not folder.is_dir():
            raise SystemExit(f"{what} not found at {folder}")
    PYTHON[0], PYTHONPATH[0] = args.python, args.pythonpath
    done = []

    def write(rows):
        table = header() + "\n\n" + markdown(rows)
        if args.markdown:
            args.markdown.write_text(table + "\n")
        if args.json:
            args.json.write_text(json.dumps({"header": header(), "rows": rows}, indent=1))
        if args.jsonl:
            with open(args.jsonl, "a", encoding="utf-8") as f:
                for row in rows[len(done):]:
                    f.write(json.dumps({"header": header(), **row}) + "\n")
            done[:] = rows
        return table

    rows = measure(args.book_code, args.mnist, args.only, args.timeout, progress=write,
                   workdir=args.workdir, modes=args.modes)
    print("\n" + write(rows))


if __name__ == "__main__":
    main()
