#!/usr/bin/env bash
# The package as a user installs it: `python -m build` makes an sdist and a wheel; a second
# wheel is built from the sdist alone (so the sdist must hold every file the build needs), and
# installed into a fresh venv, outside the source tree, where fastnn must import and compute a
# gradient.  Also checks that the sdist holds nothing generated and the wheel no C sources.
#
#   bash tests/check_dist.sh        (needs `build` and, for the platform report, `auditwheel`)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python}"
work="$(mktemp -d "${TMPDIR:-/tmp}/fastnn-dist.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "dist: python -m build (sdist and wheel)"
"$python" -m build --outdir "$work/dist" "$repo" >"$work/build.log" 2>&1 ||
    { tail -n 40 "$work/build.log"; echo "dist: build failed" >&2; exit 1; }
sdist="$(ls "$work"/dist/fastnn-*.tar.gz)"

listing="$(tar tzf "$sdist")"
for needed in meson.build pyproject.toml src_c/fnn_common.h fastnn/_kernels/_dense.pyx \
              fastnn/_kernels/_cfnn.pxd fastnn/reference/layers.py; do
    grep -q "/$needed\$" <<<"$listing" || { echo "dist: sdist lacks $needed" >&2; exit 1; }
done
if grep -E '\.(so|o)$|/fastnn/_kernels/[^/]*\.c$|/build/' <<<"$listing"; then
    echo "dist: the sdist holds generated files (above)" >&2
    exit 1
fi

echo "dist: a wheel from the sdist alone"
"$python" -m build --wheel --outdir "$work/from-sdist" "$sdist" >"$work/wheel.log" 2>&1 ||
    { tail -n 40 "$work/wheel.log"; echo "dist: wheel from sdist failed" >&2; exit 1; }
wheel="$(ls "$work"/from-sdist/fastnn-*.whl)"
case "$wheel" in *none-any.whl) echo "dist: $wheel has no platform tag" >&2; exit 1;; esac
if unzip -l "$wheel" | grep -E '\.(c|pyx)$'; then
    echo "dist: the wheel carries sources (above)" >&2
    exit 1
fi
if command -v auditwheel >/dev/null || "$python" -m auditwheel --version >/dev/null 2>&1; then
    "$python" -m auditwheel show "$wheel" 2>/dev/null | sed -n '1,4p' | sed 's/^/dist: auditwheel: /'
fi

echo "dist: installing $(basename "$wheel") into a fresh venv"
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q "$wheel"
cd "$work"  # away from the source tree: the installed package must be the one imported
"$work/venv/bin/python" - <<'PY'
import numpy as np
import fastnn, fastnn.layers
from fastnn.nets import TwoLayerNet
assert "site-packages" in fastnn.__file__, fastnn.__file__
net = TwoLayerNet(4, 3, 2, rng=0)
grads = net.gradient(np.ones((5, 4)), np.array([0, 1, 0, 1, 1]))
assert sorted(grads) == ["W1", "W2", "b1", "b2"] and np.isfinite(net.last_loss)
print(f"dist: fastnn {fastnn.__version__} from the wheel: import and gradient OK")
PY
