"""``python -m pipeline`` is the ``photostyle`` command."""

import sys

from pipeline.cli import main

sys.exit(main())
