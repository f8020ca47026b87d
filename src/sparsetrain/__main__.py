"""``python -m sparsetrain`` (and ``torchrun ... -m sparsetrain``): the `sparsetrain` command."""

import sys

from sparsetrain.cli import main

if __name__ == "__main__":
    sys.exit(main())
