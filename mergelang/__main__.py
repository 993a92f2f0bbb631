"""``python -m mergelang`` runs the command line."""

import sys

from mergelang.cli import main

sys.exit(main())
