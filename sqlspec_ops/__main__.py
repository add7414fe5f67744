"""``python -m sqlspec_ops``: the same command as the ``sqlspec-ops`` script."""

import sys

from sqlspec_ops._cli import main

__all__ = ()

if __name__ == "__main__":
    sys.exit(main())
