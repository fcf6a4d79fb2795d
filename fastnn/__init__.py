"""fastnn: the layers of "Deep Learning from Scratch" with compiled hot loops.

``fastnn.functions``, ``fastnn.layers`` and ``fastnn.nets`` mirror the book's ``common``
package over typed Cython and C kernels (``fastnn._kernels``, ``src_c/``) with BLAS GEMMs;
``fastnn.reference`` holds the plain NumPy twin of every compiled path.
"""
from fastnn._version import __version__  # noqa: F401  (the package version)


def bench(*args, **kwargs):
    """The side-by-side benchmark of :func:`fastnn.benchmark.bench` (``python -m fastnn bench``)."""
    from fastnn.benchmark import bench as run

    return run(*args, **kwargs)
