"""Build of fastnn's compiled layer.

Every ``fastnn/_kernels/*.pyx`` becomes one extension module, compiled together with the
plain C kernels of ``src_c/``.  The Cython directives and C flags live here and nowhere else.

``FASTNN_DEBUG=1`` turns bounds checking on and optimisation down;
``FASTNN_SANITIZE=1`` adds AddressSanitizer and UndefinedBehaviorSanitizer (see tests/sanitize.sh).
"""
import os
from glob import glob

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTNN_DEBUG") == "1"
SANITIZE = os.environ.get("FASTNN_SANITIZE") == "1"

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "cpow": True,
    "embedsignature": True,
}

# -O3 without -march=native: the wheel must run on any x86-64 (or other) CPU.  With GCC >= 11 on
# glibc, the vectorised kernels are also built for AVX2 and AVX-512 and picked at load time
# (FNN_MULTIVERSION in src_c/fnn_common.h).
compile_args = ["-O0", "-g"] if DEBUG or SANITIZE else ["-O3"]
# no errno and no floating-point traps: libm calls and comparisons become vector instructions
# (NaN and inf still propagate; fastnn never reads the floating-point exception flags)
compile_args += ["-fno-math-errno", "-fno-trapping-math", "-Wno-unused-function"]
link_args = []
if SANITIZE:
    san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]
    compile_args += san
    link_args += san

c_sources = sorted(glob("src_c/*.c"))
c_headers = sorted(glob("src_c/*.h"))

extensions = [
    Extension(
        "fastnn._kernels." + os.path.splitext(os.path.basename(pyx))[0],
        sources=[pyx] + c_sources,
        depends=c_headers,
        include_dirs=["src_c", np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        libraries=[] if os.name == "nt" else ["m"],
    )
    for pyx in sorted(glob("fastnn/_kernels/*.pyx"))
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives, annotate=False))
