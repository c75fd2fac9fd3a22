"""``python -m xling.cli``: the command line."""

import sys

from xling.cli import main

sys.exit(main())
