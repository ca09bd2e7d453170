"""``python -m emu`` runs the foliowalk command."""

import sys

from emu.cli import main

sys.exit(main())
