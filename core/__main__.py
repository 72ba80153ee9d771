"""``python -m bkcore``: the same as the ``bkcore`` command."""

import sys

from bkcore._startup import main

sys.exit(main())
