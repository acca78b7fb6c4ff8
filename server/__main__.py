"""`python -m server` is the `tally` command."""

import sys

from server.cli import main

sys.exit(main())
