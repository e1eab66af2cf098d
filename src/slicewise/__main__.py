"""`python -m slicewise ...` is the `slicewise` command."""

import sys

from slicewise.cli import main

sys.exit(main())
