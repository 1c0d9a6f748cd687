"""``python -m explainer_service.cli``."""

import sys

from . import main

sys.exit(main())
