"""`python -m bgpt` runs the `bgpt` command."""

import sys

from bgpt.cli import main

sys.exit(main())
