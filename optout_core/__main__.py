"""``python -m optout_core``: the command line (see :mod:`optout_core.cli`)."""

import sys

from optout_core.cli.main import main

sys.exit(main())
