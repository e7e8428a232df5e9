"""``python -m segflow`` (also under ``torchrun -m segflow``): the ``segflow`` command."""

import sys

from segflow.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
