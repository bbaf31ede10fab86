"""``python -m lqtheory``: the ``lqtheory`` command (see :mod:`lqtheory.cli.main`)."""

import sys

from lqtheory.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
