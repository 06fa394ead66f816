"""``python -m podhose_redrive``: the same as the ``podhose-redrive`` console script."""

import sys

from podhose_redrive.cli import main

sys.exit(main())
