"""`python -m service …`: the same command line as `irisflow …`."""

import sys

from .cli import main

sys.exit(main())
