"""``python -m bkcore``: the same as the ``bkcore`` command."""

import sys

from bkcore.cli.main import main

sys.exit(main())
