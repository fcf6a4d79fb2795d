"""The book's ``common`` package answered by fastnn: one module per module of the book's
(``functions``, ``layers``, ``gradient``, ``optimizer``, ``trainer``, ``util``,
``multi_layer_net``, ``multi_layer_net_extend``), each exporting the book's public names."""
