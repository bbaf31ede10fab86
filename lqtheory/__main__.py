"""``python -m lqtheory``: the ``lqtheory`` command (see :mod:`lqtheory.cli`)."""

import sys

from lqtheory.cli import main

if __name__ == "__main__":
    sys.exit(main())
