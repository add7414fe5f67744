"""Driver support: one module per SQLSpec adapter behind the interface in ``base``, the pool proxy they share (``proxy``), and the ``registry`` that finds them."""
