"""Driver support: one module per SQLSpec adapter behind the interface in ``base``; ``registry`` finds them."""
