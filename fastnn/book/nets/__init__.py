"""The chapters' own network modules, answered by fastnn's networks under
``python -m fastnn book --nets``: ``two_layer_net`` of chapter 4 (:mod:`.ch04_two_layer_net`)
and of chapter 5 (:mod:`.ch05_two_layer_net`), ``simple_convnet`` and ``deep_convnet``."""
