"""`python -m metarl` runs the `metarl` command line (see metarl.cli)."""

import sys

from metarl.cli import main

sys.exit(main())
