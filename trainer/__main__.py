"""`python -m trainer`: the same entry point as the `skfleet-train` console script."""

import sys

from trainer.cli import main

sys.exit(main())
