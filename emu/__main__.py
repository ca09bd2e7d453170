"""``python -m emu`` runs the foliowalk command."""

import sys

from .cli import main

sys.exit(main())
