"""`python -m skfleet.bench`: the same as `python -m skfleet bench`."""

import sys

from skfleet.bench.cli import main

sys.exit(main())
