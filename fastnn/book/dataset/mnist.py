"""The book's ``dataset/mnist.py``, answered by :func:`fastnn.datasets.load_mnist`.

``load_mnist(normalize, flatten, one_hot_label)`` returns what the book's returns (float32
images in [0, 1] or uint8, flat or (N, 1, 28, 28), uint8 labels or float64 one-hot rows), read
by fastnn's loader, which validates the IDX files and keeps a parsed cache in the user's cache
folder: it writes nothing beside the data (the book's writes ``mnist.pkl`` there).

The files are looked for, in turn, in ``python -m fastnn book --data-dir``,
``$FASTNN_DATA``, the book's own ``dataset/`` folder when it holds the four files (found on
``sys.path`` as the book's scripts find it, through ``sys.path.append(os.pardir)``) and
fastnn's user cache, into which they are downloaded when they are nowhere.
"""
import gzip
import os
import pickle
import sys
import urllib.request

import numpy as np

from fastnn import datasets as _datasets
from fastnn.book import dataset as _package

__all__ = ["url_base", "key_file", "dataset_dir", "save_file", "train_num", "test_num",
           "img_dim", "img_size", "download_mnist", "init_mnist", "load_mnist",
           "gzip", "pickle", "os", "np", "urllib"]

url_base = _datasets.MNIST_MIRRORS[0]
key_file = {
    "train_img": "train-images-idx3-ubyte.gz",
    "train_label": "train-labels-idx1-ubyte.gz",
    "test_img": "t10k-images-idx3-ubyte.gz",
    "test_label": "t10k-labels-idx1-ubyte.gz",
}
train_num = 60000
test_num = 10000
img_dim = (1, 28, 28)
img_size = 784


def _book_folder():
    """The book's ``dataset/`` folder on ``sys.path`` when it holds the four files, or None."""
    for entry in sys.path:
        folder = os.path.join(entry or os.curdir, "dataset")
        if os.path.isfile(os.path.join(folder, "mnist.py")) and all(
                os.path.isfile(os.path.join(folder, name)) for name in key_file.values()):
            return os.path.abspath(folder)
    return None


def _data_dir():
    """Where fastnn's loader is told to look first (None: ``$FASTNN_DATA``, then its cache)."""
    if _package.DATA_DIR is not None:
        return _package.DATA_DIR
    if os.environ.get("FASTNN_DATA"):
        return None
    return _book_folder()


def _folder():
    folder = _data_dir() or os.environ.get("FASTNN_DATA")
    return os.path.abspath(folder) if folder else str(_datasets._user_cache_dir())


dataset_dir = _folder()
#: The book keeps a pickle here; fastnn keeps its parsed cache in the user cache instead.
save_file = os.path.join(dataset_dir, "mnist.pkl")


def download_mnist():
    """Make sure the four files are present (downloading what is missing, checksummed)."""
    _datasets.load_mnist(data_dir=_data_dir(), download=True)


def init_mnist():
    """The book's first-run preparation: download and parse (fastnn caches the parse)."""
    download_mnist()


def load_mnist(normalize=True, flatten=True, one_hot_label=False):
    """MNIST as the book's ``load_mnist`` returns it:
    ``(x_train, t_train), (x_test, t_test)``.

    Parameters
    ----------
    normalize : bool
        Pixels as float32 in [0, 1] (else uint8 0..255).
    flatten : bool
        Images of shape (N, 784) (else (N, 1, 28, 28)).
    one_hot_label : bool
        Labels as (N, 10) float64 one-hot rows (else uint8 labels).
    """
    return _datasets.load_mnist(normalize=normalize, flatten=flatten,
                                one_hot_label=one_hot_label, data_dir=_data_dir())
