"""The book's ``dataset`` package answered by fastnn (``dataset.mnist``)."""
