"""``python -m bench [--quick] [--config ARCH:NAME] [--arch ARCH] [--json]``."""

import sys

from .core import main

sys.exit(main())
