"""``python -m rfprobe ...``: the ``rfprobe`` command (see :mod:`rfprobe.cli`)."""
import sys

from .cli import main

if __name__ == "__main__":          # pytest's doctest collection imports this module too
    sys.exit(main())
