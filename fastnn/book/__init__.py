"""The book's scripts, unchanged, on fastnn: ``python -m fastnn book [--nets] SCRIPT [ARGS...]``.

:mod:`fastnn.book.runner` runs a script of *Deep Learning from Scratch* as ``python SCRIPT``
would, with the book's shared modules answered by the modules of this package:

==============================  ===============================================================
the book's module               answered by
==============================  ===============================================================
``common.functions``            :mod:`fastnn.functions`
``common.layers``               :mod:`fastnn.layers` (and the functions, ``im2col``, ``col2im``)
``common.gradient``             :mod:`fastnn.gradient`
``common.optimizer``            :mod:`fastnn.optim`
``common.trainer``              :mod:`fastnn.trainer`
``common.util``                 :mod:`fastnn.util`
``common.multi_layer_net``      :class:`fastnn.nets.MultiLayerNet`
``common.multi_layer_net_extend`` fastnn's ``MultiLayerNetExtend``
``dataset.mnist``               :func:`fastnn.datasets.load_mnist`
==============================  ===============================================================

Each exports what the book's module exports (its ``from ... import *`` hands a script the same
names, ``np`` included) and nothing else; a name fastnn lacks fails where a script uses it,
with an error naming it.  With ``--nets`` the chapters' own networks are fastnn's too:
``two_layer_net`` (chapter 4's sigmoid network, :mod:`fastnn.book.nets.ch04_two_layer_net`,
or chapter 5's, :class:`fastnn.nets.TwoLayerNet`), ``simple_convnet`` and ``deep_convnet``.

The modules can also be imported directly (``from fastnn.book.common.layers import *``).
"""
