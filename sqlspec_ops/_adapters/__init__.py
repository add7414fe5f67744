"""Driver support: one module per SQLSpec adapter behind the interface in ``base``.

``proxy`` is the pool proxy every driver module subclasses with its borrow API; ``registry`` finds the adapter.
"""
