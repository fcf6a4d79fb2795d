#!/usr/bin/env bash
# Build fastnn with AddressSanitizer + UndefinedBehaviorSanitizer and run tests against it.
#
#   bash tests/sanitize.sh [extra pytest arguments]
#
# Run from anywhere (the repository is found from this script's path) with a Python that has
# venv and pip, and gcc.  The sanitized build is installed, not editable, into a scratch venv
# of its own (numpy, threadpoolctl, pytest, hypothesis and the build tools come from the
# package index), from a scratch copy of the source tree: the checkout and its environment
# stay as they are, and the tests, run from the checkout's tests/ folder, import the
# sanitized package.
#
# The tests: those that drive the compiled code through every entry point, on good and on
# bad input (parity with the twins, the fuzzing, the robustness and thread cases, layers,
# functions, networks, optimizers); all but tests/test_memory.py, whose RSS measure the
# sanitizer's quarantine of freed memory would defeat, and the data/io/training tests, which
# reach no kernel that these do not.
#
# Python itself is not instrumented: libasan and libubsan are preloaded into it.  Leak
# detection is off (the interpreter keeps its objects at exit); any ASan report aborts the
# process, any UBSan report halts it, and the script fails on either, or when a canary
# (a kernel deliberately given too short an array) is not caught.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python}"
work="$(mktemp -d "${TMPDIR:-/tmp}/fastnn-sanitize.XXXXXX")"
trap 'rm -rf "$work"' EXIT

TESTS=(tests/test_parity.py tests/test_fuzz.py tests/test_conv.py tests/test_robustness.py tests/test_threads.py
       tests/test_layers.py tests/test_functions.py tests/test_activations.py tests/test_dense.py
       tests/test_loss.py tests/test_network.py tests/test_optim.py tests/test_untrusted_arrays.py
       tests/test_interrupts.py tests/test_files_hardening.py tests/test_normalization.py
       tests/test_bf16.py tests/test_convnet.py tests/test_bf16_convnet.py tests/test_sparse.py)

echo "sanitize: copying $repo to $work/src"
mkdir -p "$work/src"
excludes=('*.so' '*.o' 'build' '.venv' 'venv' '.git' '__pycache__' '.pytest_cache'
          '.hypothesis' '*.egg-info' '.mesonpy-*')
if command -v rsync >/dev/null; then
    rsync -a "${excludes[@]/#/--exclude=}" "$repo/" "$work/src/"
else
    tar -C "$repo" "${excludes[@]/#/--exclude=}" -cf - . | tar -C "$work/src" -xf -
fi

echo "sanitize: a scratch venv with the build tools and the tests' needs"
"$python" -m venv "$work/venv"
venv_python="$work/venv/bin/python"
"$venv_python" -m pip install -q numpy threadpoolctl pytest hypothesis "meson-python>=0.16" \
    "meson>=1.4" ninja "Cython>=3.1" 2>&1 | grep -v "^WARNING: Location" || true

echo "sanitize: building with -Db_sanitize=address,undefined (log: build.log)"
# b_lundef=false: the modules leave the sanitizers' symbols to the preloaded runtimes
if ! "$venv_python" -m pip install -v --no-build-isolation --no-deps \
        -Csetup-args=-Dbuildtype=debug -Csetup-args=-Db_sanitize=address,undefined \
        -Csetup-args=-Db_lundef=false "$work/src" \
        >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log"
    echo "sanitize: build failed" >&2
    exit 1
fi
python="$venv_python"
cd "$work"  # not the source tree: the installed, sanitized package is the one imported

libasan="$(gcc -print-file-name=libasan.so)"
libubsan="$(gcc -print-file-name=libubsan.so)"
for lib in "$libasan" "$libubsan"; do
    if [[ ! -e "$lib" ]]; then
        echo "sanitize: $lib not found (install gcc's sanitizer runtimes)" >&2
        exit 1
    fi
done

export LD_PRELOAD="$libasan $libubsan"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export PYTHONDONTWRITEBYTECODE=1
export FASTNN_HYPOTHESIS_PROFILE="${FASTNN_HYPOTHESIS_PROFILE:-ci}"

# The modules imported must be the sanitized ones of the copy.
"$python" - "$work/venv" <<'EOF'
import importlib, sys
for name in ("_activations", "_conv", "_convnet", "_dense", "_loss", "_network", "_numgrad",
             "_optim"):
    module = importlib.import_module("fastnn._kernels." + name)
    if not module.__file__.startswith(sys.argv[1]):
        sys.exit(f"sanitize: imported {module.__file__}, not the sanitized copy")
    if b"__asan_" not in open(module.__file__, "rb").read():
        sys.exit(f"sanitize: {module.__file__} is not instrumented")
EOF

# The canary: a C kernel reading past the end of an array must be reported.  The compiled entry
# points refuse arrays shorter than the sizes they are given, so the kernel is called directly.
if "$python" -c "
import ctypes
import numpy as np
from fastnn._kernels import _activations
kernel = ctypes.CDLL(_activations.__file__).fnn_relu_backward_f64
dout, mask, dx = np.ones(200), np.zeros(100, np.uint8), np.empty(200)  # mask 100 bytes short
kernel(*(ctypes.c_void_p(a.ctypes.data) for a in (dout, mask, dx)), ctypes.c_ssize_t(200))
" >canary.log 2>&1; then
    echo "sanitize: the canary's out-of-bounds read went unreported: ASan is not active" >&2
    exit 1
fi
if ! grep -q "ERROR: AddressSanitizer: heap-buffer-overflow" canary.log; then
    cat canary.log >&2
    echo "sanitize: the canary failed, but not with an ASan report" >&2
    exit 1
fi
echo "sanitize: canary caught (heap-buffer-overflow reported)"

echo "sanitize: running ${TESTS[*]}"
status=0
"$python" -m pytest -q -p no:cacheprovider --rootdir "$repo" "${TESTS[@]/#/$repo/}" "$@" 2>&1 |
    tee pytest.log || status=$?
if grep -qE "ERROR: AddressSanitizer|runtime error:" pytest.log; then
    echo "sanitize: sanitizer report above" >&2
    exit 1
fi
if [[ $status -ne 0 ]]; then
    echo "sanitize: tests failed (status $status)" >&2
    exit "$status"
fi
echo "sanitize: no ASan/UBSan report"
