"""`python -m skfleet`: the same entry point as the `skfleet-train` console script."""

import sys

from skfleet.cli import main

sys.exit(main())
