"""The book's ``dataset`` package answered by fastnn (``dataset.mnist``)."""

#: The MNIST folder given to ``python -m fastnn book --data-dir`` (None: search), set before
#: the script runs and read by :mod:`fastnn.book.dataset.mnist`.
DATA_DIR = None
