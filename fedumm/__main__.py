"""``python -m fedumm``: the ``fedumm`` command (fedumm.cli)."""

import sys

from fedumm.cli import main

sys.exit(main())
