"""``python -m bridge.cli`` runs the ``stemstream`` command."""
import sys

from .main import main

sys.exit(main())
